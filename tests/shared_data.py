"""Locate ../shared/data for tests: skip when absent, fail when CI is set."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_data_dir() -> Path:
    """The shared real-data folder; skips the test (or fails it under CI) if missing."""
    if not SHARED_DATA.is_dir():
        reason = f"../shared/data not found: {SHARED_DATA}"
        if os.environ.get("CI"):
            pytest.fail(reason + " (required when CI is set)")
        pytest.skip(reason)
    return SHARED_DATA
