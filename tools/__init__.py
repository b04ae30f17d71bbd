"""Developer tools that are not part of the pipeline (e.g. ``python -m tools.ui_check``)."""
