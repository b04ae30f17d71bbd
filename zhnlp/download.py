"""Download a file with a pinned sha256, streaming, and an atomic rename on success."""

from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path

CHUNK = 1 << 20


class ChecksumError(ValueError):
    pass


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(url: str, sha256: str, dest: Path, timeout: float = 60.0) -> int:
    """Download ``url`` to ``dest``; raises ChecksumError (and keeps nothing) on a mismatch."""
    if not (isinstance(sha256, str) and len(sha256) == 64):
        raise ValueError(f"{url}: sha256 must be 64 hex characters, got {sha256!r}")
    if not url.startswith(("http://", "https://", "file://")):
        raise ValueError(f"{url}: only http(s) and file URLs are supported")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    digest, size = hashlib.sha256(), 0
    with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as out:
        for block in iter(lambda: resp.read(CHUNK), b""):
            digest.update(block)
            out.write(block)
            size += len(block)
    if digest.hexdigest() != sha256.lower():
        tmp.unlink()
        raise ChecksumError(f"{url}: sha256 mismatch: expected {sha256.lower()}, got {digest.hexdigest()} ({size} bytes)")
    os.replace(tmp, dest)
    return size
