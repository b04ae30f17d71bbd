"""Downloads pinned by sha256: http(s) only, an overall deadline, a size cap and nothing left behind.

One ``downloads.<name>`` params entry maps relative file paths to :class:`FileSpec`
(``url``, ``sha256``, optional ``max_bytes``, ``deadline_s``, ``allow_file_url``, ``extract``).
An entry with ``extract`` is a zip or tar(.gz) archive: the sha256 pins the archive's bytes, and
selected members land in the output folder (zhnlp/data/archive.py documents the fields and checks).

- Only ``http://`` and ``https://`` URLs (redirects too); ``file://`` only where the entry
  says ``allow_file_url: true``, and only for a regular file.
- ``deadline_s`` bounds the whole file, connect and headers included: a watchdog shuts the
  connection down when it passes, so a server that sends one byte every few seconds fails.
  A connection with no byte for ``STALL_S`` fails sooner.
- ``max_bytes`` is checked against ``Content-Length`` before reading, and while reading.
- Files stream into a temporary ``.part`` file renamed on success; :func:`fetch_into` fills a
  staging folder renamed to the output folder once every file verified (and every archive
  extracted), and removes it on any failure, so a failed download leaves neither ``.part``
  files nor a half output folder. Archives download beside it and go once extracted.
- Files are written with mode 0644, whatever the umask or an archive says.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import socket
import ssl
import stat
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from zhnlp.config import ConfigError, from_params, in_range, require_mapping
from zhnlp.data.archive import ArchiveSpec, unpack
from zhnlp.errors import UserError

CHUNK = 1 << 20
DEFAULT_MAX_BYTES = 4 << 30  # 4 GiB: the largest corpus file we know of (LCCC-large) fits
DEFAULT_DEADLINE_S = 3600.0
STALL_S = 60.0  # no byte for this long fails the file before its deadline
SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


class DownloadError(UserError):
    """A download that failed; the message names the URL and the reason."""


class ChecksumError(DownloadError):
    pass


def url_problem(url: Any, allow_file_url: bool = False) -> str | None:
    """Why ``url`` may not be fetched, or None."""
    parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme.lower() not in (("http", "https", "file") if allow_file_url else ("http", "https")):
        return "only http(s) URLs are allowed (file:// needs allow_file_url: true)"
    if parts.scheme.lower() == "file":
        return None if parts.netloc in ("", "localhost") and parts.path else "a file URL needs a local absolute path"
    return None if parts.hostname else "the URL has no host"


@dataclass(frozen=True)
class FileSpec:
    """One ``downloads.<name>.<file>`` entry."""

    url: str
    sha256: str
    max_bytes: int = DEFAULT_MAX_BYTES
    deadline_s: float = DEFAULT_DEADLINE_S
    allow_file_url: bool = False
    # None: a plain file. Typed without "| None" so that a mistake inside ``extract`` keeps its own
    # one-line message (zhnlp.config reports a failed union member only as "expected ... or null").
    extract: ArchiveSpec = None  # type: ignore[assignment]

    def validate(self, where: str) -> None:
        if not SHA256.match(self.sha256):
            raise ConfigError(f"{where}.sha256: {self.sha256!r} is not allowed; use 64 hex characters")
        problem = url_problem(self.url, self.allow_file_url)
        if problem:
            raise ConfigError(f"{where}.url: {self.url!r} is not allowed; {problem}")
        in_range(f"{where}.max_bytes", self.max_bytes, 1, 1 << 50)
        in_range(f"{where}.deadline_s", self.deadline_s, 0.1, 7 * 86400.0)


def check_relpath(where: str, rel: Any) -> str:
    """A file key: a normal relative POSIX path that stays inside the output folder."""
    ok = isinstance(rel, str) and rel and not any(ord(c) < 32 or c == "\\" for c in rel)
    parts = rel.split("/") if ok else []
    if not ok or PurePosixPath(rel).is_absolute() or any(p in ("", ".", "..") or len(p.encode()) > 255 for p in parts):
        raise ConfigError(f"{where}: file path {rel!r} is not allowed; use a relative path like dir/file.json (no '..', '.', '//', '\\' or leading '/')")
    return rel


def download_specs(entry: Any, where: str) -> dict[str, FileSpec]:
    """The files of one ``downloads.<name>`` entry, strictly checked."""
    files = require_mapping(where, entry)
    if not files:
        raise ConfigError(f"{where}: no files; map a relative file path to {{url: ..., sha256: ...}}")
    specs = {check_relpath(where, rel): from_params(FileSpec, spec, f"{where}.{rel}") for rel, spec in files.items()}
    for rel in specs:
        parents = {str(p) for p in PurePosixPath(rel).parents}
        clash = sorted(parents & set(specs))
        if clash:
            raise ConfigError(f"{where}: {rel!r} needs {clash[0]!r} to be a folder, but it is a file entry too")
    return specs


class _Deadline:
    """Shuts every watched connection down when ``seconds`` have passed (wakes blocked reads)."""

    def __init__(self, seconds: float):
        self.seconds, self.expired = seconds, False
        self.at = time.monotonic() + seconds
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> "_Deadline":
        self._timer.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._timer.cancel()
        with self._lock:
            for sock in self._socks:
                sock.close()

    def passed(self) -> bool:
        return self.expired or time.monotonic() >= self.at

    def watch(self, sock: socket.socket) -> None:
        dup = sock.dup()  # shutting a duplicate down ends the connection, whatever wraps the original
        with self._lock:
            self._socks.append(dup)
            if self.expired:
                _shutdown(dup)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._socks:
                _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _WatchedConnection(http.client.HTTPConnection):
    """Connects within ``timeout`` (at most the deadline), then reads with ``read_timeout``."""

    watch: Callable[[socket.socket], None]
    read_timeout: float

    def connect(self) -> None:  # in the HTTPS class below, runs before the TLS handshake
        super().connect()
        self.sock.settimeout(self.read_timeout)
        self.watch(self.sock)


class _WatchedHTTPSConnection(http.client.HTTPSConnection, _WatchedConnection):
    pass


def _watched(cls: type, watch: Callable[[socket.socket], None], read_timeout: float) -> Callable[..., http.client.HTTPConnection]:
    def connection(*args: Any, **kwargs: Any) -> http.client.HTTPConnection:
        conn = cls(*args, **kwargs)
        conn.watch, conn.read_timeout = watch, read_timeout
        return conn

    return connection


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, watch: Callable[[socket.socket], None], read_timeout: float):
        super().__init__()
        self.watch, self.read_timeout = watch, read_timeout

    def http_open(self, req):
        return self.do_open(_watched(_WatchedConnection, self.watch, self.read_timeout), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, watch: Callable[[socket.socket], None], read_timeout: float, context: ssl.SSLContext | None = None):
        super().__init__()
        self.watch, self.read_timeout, self.context = watch, read_timeout, context or ssl.create_default_context()

    def https_open(self, req):
        return self.do_open(_watched(_WatchedHTTPSConnection, self.watch, self.read_timeout), req, context=self.context)


def _open_http(url: str, deadline: _Deadline, stall_s: float, context: ssl.SSLContext | None):
    """The response to GET ``url`` through an opener that speaks http(s) only (redirects included)."""
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),
        urllib.request.UnknownHandler(),
        _HTTPHandler(deadline.watch, stall_s),
        _HTTPSHandler(deadline.watch, stall_s, context),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPRedirectHandler(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    request = urllib.request.Request(url, headers={"User-Agent": "zhnlp-download", "Accept-Encoding": "identity"})
    return opener.open(request, timeout=min(stall_s, deadline.seconds))  # the connect timeout


def _copy(source: BinaryIO, out: BinaryIO, url: str, max_bytes: int, expected: int | None, deadline: _Deadline) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    read = getattr(source, "read1", source.read)  # at most one recv per call: the deadline is checked often
    while True:
        block = read(CHUNK)
        if deadline.expired:
            raise TimeoutError
        if not block:
            break
        size += len(block)
        if size > max_bytes:
            raise DownloadError(f"{url}: larger than max_bytes={max_bytes}")
        digest.update(block)
        out.write(block)
    if expected is not None and size != expected:
        raise DownloadError(f"{url}: connection closed after {size} of {expected} bytes")
    return digest.hexdigest(), size


def _stream(url: str, out: BinaryIO, max_bytes: int, deadline_s: float, stall_s: float, context: ssl.SSLContext | None) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(url)
    with _Deadline(deadline_s) as deadline:
        try:
            if parts.scheme.lower() == "file":
                path = urllib.request.url2pathname(parts.path)
                fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not block the open
                info = os.fstat(fd)
                if not stat.S_ISREG(info.st_mode):
                    os.close(fd)
                    raise DownloadError(f"{url}: not a regular file")
                with os.fdopen(fd, "rb") as src:
                    if info.st_size > max_bytes:
                        raise DownloadError(f"{url}: {info.st_size} bytes is larger than max_bytes={max_bytes}")
                    return _copy(src, out, url, max_bytes, info.st_size, deadline)
            with _open_http(url, deadline, stall_s, context) as resp:
                length = resp.headers.get("Content-Length")
                expected = int(length) if length and length.strip().isdigit() else None
                if expected is not None and expected > max_bytes:
                    raise DownloadError(f"{url}: Content-Length {expected} is larger than max_bytes={max_bytes}")
                return _copy(resp, out, url, max_bytes, expected, deadline)
        except DownloadError:
            raise
        except urllib.error.HTTPError as err:
            raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from None
        except (OSError, http.client.HTTPException, ValueError) as err:
            if deadline.passed():
                raise DownloadError(f"{url}: not complete within deadline_s={deadline_s:g} s") from None
            if isinstance(err, TimeoutError) or isinstance(getattr(err, "reason", None), TimeoutError):
                raise DownloadError(f"{url}: no data for {stall_s:g} s") from None
            reason = getattr(err, "reason", None) or err
            raise DownloadError(f"{url}: {str(reason).splitlines()[0] if str(reason) else type(reason).__name__}") from None


def fetch(
    url: str,
    sha256: str,
    dest: Path,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    deadline_s: float = DEFAULT_DEADLINE_S,
    allow_file_url: bool = False,
    stall_s: float = STALL_S,
    ssl_context: ssl.SSLContext | None = None,
) -> int:
    """Download ``url`` to ``dest`` and return its size; a DownloadError (ChecksumError on a
    sha256 mismatch) keeps nothing, not even the ``.part`` file. ``ssl_context``: default, the
    system's trusted certificates with host name checks."""
    problem = url_problem(url, allow_file_url)
    if problem:
        raise DownloadError(f"{url}: {problem}")
    if not (isinstance(sha256, str) and SHA256.match(sha256)):
        raise DownloadError(f"{url}: sha256 must be 64 hex characters, got {sha256!r}")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            digest, size = _stream(url, out, max_bytes, deadline_s, stall_s, ssl_context)
        if digest != sha256.lower():
            raise ChecksumError(f"{url}: sha256 mismatch: expected {sha256.lower()}, got {digest} ({size} bytes)")
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return size


@dataclass
class Fetched:
    """What :func:`fetch_into` brought: bytes downloaded (archives included), and extracted."""

    bytes: int = 0
    extracted_files: int = 0
    extracted_bytes: int = 0


def fetch_into(files: Mapping[str, FileSpec], out_dir: Path, *, stall_s: float = STALL_S) -> Fetched:
    """Every file into ``out_dir`` (replaced only once all verified and extracted). On failure
    neither ``out_dir``'s new content nor any staging file or archive remains."""
    out_dir = Path(out_dir)
    staging = out_dir.with_name(f".{out_dir.name}.partial")
    archives = out_dir.with_name(f".{out_dir.name}.archives")  # outside the output: a member never meets one
    for folder in (staging, archives):
        shutil.rmtree(folder, ignore_errors=True)  # left by a killed run
    staging.mkdir(parents=True)
    done = Fetched()
    try:
        # plain files first: an archive member then never lands where a later file would overwrite it
        for rel, spec in sorted(files.items(), key=lambda item: item[1].extract is not None):
            dest = staging / rel if spec.extract is None else archives / rel
            done.bytes += fetch(
                spec.url, spec.sha256, dest,
                max_bytes=spec.max_bytes, deadline_s=spec.deadline_s, allow_file_url=spec.allow_file_url, stall_s=stall_s,
            )
            if spec.extract is not None:
                count, size = unpack(dest, staging, rel, spec.extract, spec.url)
                done.extracted_files += count
                done.extracted_bytes += size
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(archives, ignore_errors=True)
    return done


def fetch_all(files: Mapping[str, FileSpec], out_dir: Path, *, stall_s: float = STALL_S) -> int:
    """:func:`fetch_into`, returning the bytes downloaded."""
    return fetch_into(files, out_dir, stall_s=stall_s).bytes
