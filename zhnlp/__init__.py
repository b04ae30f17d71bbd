"""zhnlp: pure library for the Chinese NLP pipeline (no DVC, Prefect or MLflow imports)."""

__version__ = "0.1.0"
