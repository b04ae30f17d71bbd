"""Thin DVC stage programs: each reads its params section, calls zhnlp, writes outputs and logs to MLflow."""
