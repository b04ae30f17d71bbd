"""Corpus downloads pinned by sha256, against real HTTP servers on 127.0.0.1: one serving ../shared/data,
one misbehaving on purpose (slow drips, oversized and short bodies, redirects to file://)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time

import pytest
import yaml
from conftest import make_project, project_env
from shared_data import shared_data_dir

from zhnlp.config import ConfigError
from zhnlp.data.download import ChecksumError, DownloadError, FileSpec, download_specs, fetch, fetch_all


@pytest.fixture(scope="module")
def server():
    root = shared_data_dir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}", root
    httpd.shutdown()
    httpd.server_close()


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fetch_verifies_the_checksum(server, tmp_path):
    base, root = server
    src = root / "ape210k" / "valid.ape.json"
    dest = tmp_path / "valid.ape.json"
    assert fetch(f"{base}/ape210k/valid.ape.json", sha256(src), dest) == src.stat().st_size
    assert dest.read_bytes() == src.read_bytes()
    bad = tmp_path / "bad.json"
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        fetch(f"{base}/ape210k/valid.ape.json", "0" * 64, bad)
    assert not bad.exists() and not list(tmp_path.glob("*.part"))
    with pytest.raises(ValueError, match="only http"):
        fetch("ftp://127.0.0.1/x", "0" * 64, bad)


@pytest.mark.slow
def test_download_stage_feeds_prepare(server, tmp_path):
    base, root = server
    project = make_project(tmp_path / "project")
    params_path = project / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    src = root / "ape210k" / "valid.ape.json"
    params["downloads"] = {"ape210k": {"valid.ape.json": {"url": f"{base}/ape210k/valid.ape.json", "sha256": sha256(src)}}}
    params["ape210k"].update(path="data/downloads/ape210k", splits={"valid": "valid.ape.json"})
    params_path.write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False))

    env = project_env(project)
    proc = subprocess.run(["dvc", "repro", "prepare_ape210k"], cwd=project, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Running stage 'download@ape210k'" in proc.stdout
    metrics = json.loads((project / "reports/prepare_ape210k/metrics.json").read_text())
    assert metrics["valid"]["rows"] == 4999 and metrics["dropped_rows"] == 1

    params["downloads"]["ape210k"]["valid.ape.json"]["sha256"] = "f" * 64
    params_path.write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False))
    proc = subprocess.run(["dvc", "repro", "download@ape210k"], cwd=project, env=env, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "sha256 mismatch" in proc.stderr + proc.stdout


# ---------------------------------------------------------------------------------------------
# hostile servers and entries: a real HTTP server on 127.0.0.1, misbehaving on purpose

BODY = b"pinned corpus bytes\n" * 100


class Hostile(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _head(self, status=200, **headers):
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key.replace("_", "-"), value)
        self.end_headers()

    def do_GET(self):  # noqa: N802 - http.server's naming
        path = self.path
        try:
            if path == "/ok":
                self._head(Content_Length=str(len(BODY)))
                self.wfile.write(BODY)
            elif path == "/drip":  # one byte at a time, forever slower than any deadline
                self._head(Content_Length="100000")
                for _ in range(100):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.5)
            elif path == "/drip-headers":  # the status line and headers one byte at a time
                for byte in b"HTTP/1.0 200 OK\r\nX-Padding: " + b"y" * 100:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.5)
            elif path == "/big":  # announces more than the cap
                self._head(Content_Length=str(10 * len(BODY)))
                self.wfile.write(BODY)
            elif path == "/unannounced":  # no Content-Length: the cap is enforced while reading
                self._head()
                for _ in range(20):
                    self.wfile.write(BODY)
            elif path == "/short":  # closes before Content-Length bytes arrived
                self._head(Content_Length=str(2 * len(BODY)))
                self.wfile.write(BODY)
            elif path == "/to-file":
                self._head(302, Location="file:///etc/passwd")
            elif path == "/to-ok":
                self._head(302, Location="/ok")
            else:
                self._head(404)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture(scope="module")
def hostile():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


BODY_SHA = hashlib.sha256(BODY).hexdigest()


def leftovers(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_fetch_follows_http_redirects_and_writes_only_the_file(hostile, tmp_path):
    assert fetch(f"{hostile}/ok", BODY_SHA, tmp_path / "a.txt") == len(BODY)
    assert fetch(f"{hostile}/to-ok", BODY_SHA, tmp_path / "b.txt") == len(BODY)
    assert (tmp_path / "b.txt").read_bytes() == BODY
    assert leftovers(tmp_path) == ["a.txt", "b.txt"]


@pytest.mark.parametrize(
    ("path", "kwargs", "message"),
    [
        ("/drip", {"deadline_s": 2.0}, r"not complete within deadline_s=2 s"),
        ("/drip-headers", {"deadline_s": 2.0}, r"not complete within deadline_s=2 s"),
        ("/drip", {"deadline_s": 60.0, "stall_s": 0.2}, r"no data for 0.2 s"),
        ("/big", {"max_bytes": len(BODY) * 2}, r"Content-Length 20000 is larger than max_bytes=4000"),
        ("/unannounced", {"max_bytes": len(BODY) * 2}, r"larger than max_bytes=4000"),
        ("/short", {}, r"connection closed after 2000 of 4000 bytes"),
        ("/to-file", {}, r"Redirection to url .file:///etc/passwd. is not allowed"),
        ("/missing", {}, r"HTTP 404"),
    ],
)
def test_fetch_fails_cleanly_and_leaves_nothing(hostile, tmp_path, path, kwargs, message):
    t0 = time.monotonic()
    with pytest.raises(DownloadError, match=message) as err:
        fetch(f"{hostile}{path}", BODY_SHA, tmp_path / "out" / "f.txt", **kwargs)
    assert time.monotonic() - t0 < 10, "the deadline bounds the whole download"
    assert "\n" not in str(err.value) and str(err.value).startswith(f"{hostile}{path}: ")
    assert leftovers(tmp_path / "out") == []


def test_file_urls_need_the_opt_in(tmp_path):
    src = tmp_path / "src.txt"
    src.write_bytes(BODY)
    with pytest.raises(DownloadError, match=r"only http\(s\) URLs are allowed \(file:// needs allow_file_url: true\)"):
        fetch(src.as_uri(), BODY_SHA, tmp_path / "out.txt")
    with pytest.raises(DownloadError, match="only http"):
        fetch("file:///etc/passwd", "0" * 64, tmp_path / "out.txt")
    assert not (tmp_path / "out.txt").exists()
    assert fetch(src.as_uri(), BODY_SHA, tmp_path / "out.txt", allow_file_url=True) == len(BODY)
    with pytest.raises(DownloadError, match="not a regular file"):
        fetch(tmp_path.as_uri(), BODY_SHA, tmp_path / "dir.txt", allow_file_url=True)
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(DownloadError, match="not a regular file"):
        fetch((tmp_path / "fifo").as_uri(), BODY_SHA, tmp_path / "fifo.txt", allow_file_url=True)
    (tmp_path / "fifo").unlink()
    with pytest.raises(DownloadError, match="larger than max_bytes=10"):
        fetch(src.as_uri(), BODY_SHA, tmp_path / "capped.txt", allow_file_url=True, max_bytes=10)
    assert leftovers(tmp_path) == ["out.txt", "src.txt"]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({}, r"^downloads\.x: no files"),
        ({"../x": {"url": "http://h/x", "sha256": "0" * 64}}, r"^downloads\.x: file path '\.\./x' is not allowed"),
        ({"a/../../x": {"url": "http://h/x", "sha256": "0" * 64}}, r"file path 'a/\.\./\.\./x' is not allowed"),
        ({".": {"url": "http://h/x", "sha256": "0" * 64}}, r"file path '\.' is not allowed"),
        ({"/etc/x": {"url": "http://h/x", "sha256": "0" * 64}}, r"file path '/etc/x' is not allowed"),
        ({"a//b": {"url": "http://h/x", "sha256": "0" * 64}}, r"file path 'a//b' is not allowed"),
        ({"a\\b": {"url": "http://h/x", "sha256": "0" * 64}}, r"is not allowed"),
        ({"a": {"url": "http://h/a", "sha256": "0" * 64}, "a/b": {"url": "http://h/b", "sha256": "0" * 64}}, r"'a/b' needs 'a' to be a folder"),
        ({"f": {"url": "http://h/x", "sha256": "0" * 64, "urll": 1}}, r"^downloads\.x\.f: unknown key 'urll'; allowed keys: allow_file_url, deadline_s, extract, max_bytes, sha256, url$"),
        ({"f": {"url": "http://h/x"}}, r"missing required key 'sha256'"),
        ({"f": {"url": "http://h/x", "sha256": "abc"}}, r"^downloads\.x\.f\.sha256: 'abc' is not allowed; use 64 hex characters$"),
        ({"f": {"url": "ftp://h/x", "sha256": "0" * 64}}, r"^downloads\.x\.f\.url: 'ftp://h/x' is not allowed; only http\(s\)"),
        ({"f": {"url": "file:///etc/passwd", "sha256": "0" * 64}}, r"file:// needs allow_file_url: true"),
        ({"f": {"url": "http://h/x", "sha256": "0" * 64, "max_bytes": 0}}, r"^downloads\.x\.f\.max_bytes: 0 is not allowed"),
        ({"f": {"url": "http://h/x", "sha256": "0" * 64, "deadline_s": "1h"}}, r"^downloads\.x\.f\.deadline_s: '1h' is not allowed; expected float"),
        ({"f": {"url": "http://h/x", "sha256": "0" * 64, "allow_file_url": "yes"}}, r"allow_file_url: 'yes' is not allowed; expected bool"),
        (["f"], r"^downloads\.x: expected a mapping"),
    ],
)
def test_download_entries_are_strict(entry, message):
    with pytest.raises(ConfigError, match=message) as err:
        download_specs(entry, "downloads.x")
    assert "\n" not in str(err.value)


def test_fetch_all_replaces_the_folder_only_when_every_file_verified(hostile, tmp_path):
    out = tmp_path / "downloads" / "corpus"
    good = {"sub/a.txt": FileSpec(url=f"{hostile}/ok", sha256=BODY_SHA)}
    assert fetch_all(good, out) == len(BODY)
    assert leftovers(tmp_path / "downloads") == ["corpus", "corpus/sub", "corpus/sub/a.txt"]
    bad = good | {"b.txt": FileSpec(url=f"{hostile}/ok", sha256="f" * 64)}
    shutil.rmtree(out)
    with pytest.raises(ChecksumError):
        fetch_all(bad, out)
    assert leftovers(tmp_path / "downloads") == [], "no half folder, no staging folder, no .part file"


@pytest.mark.slow
def test_failed_download_stage_leaves_nothing_under_dvc_repro(hostile, tmp_path):
    project = make_project(tmp_path / "project")
    params_path = project / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params["downloads"] = {
        "corpus": {
            "a.txt": {"url": f"{hostile}/ok", "sha256": BODY_SHA},
            "sub/b.txt": {"url": f"{hostile}/drip", "sha256": BODY_SHA, "deadline_s": 2},
        }
    }
    params_path.write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False))
    proc = subprocess.run(["dvc", "repro", "download@corpus"], cwd=project, env=project_env(project), capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {hostile}/drip: not complete within deadline_s=2 s"], proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    downloads = project / "data" / "downloads"
    assert not downloads.exists() or leftovers(downloads) == [], "no half output folder, staging folder or .part file"


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    """The hostile handler behind TLS with a self-signed certificate for 127.0.0.1, and a silent TLS port."""
    if not shutil.which("openssl"):
        pytest.skip("openssl not found")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    httpd.daemon_threads = True
    httpd.socket = server_ctx.wrap_socket(httpd.socket, server_side=True, do_handshake_on_connect=False)
    silent = socket.create_server(("127.0.0.1", 0))  # accepts, then never answers the TLS handshake
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    client_ctx = ssl.create_default_context(cafile=str(cert))
    yield f"https://127.0.0.1:{httpd.server_port}", f"https://127.0.0.1:{silent.getsockname()[1]}", client_ctx
    httpd.shutdown()
    httpd.server_close()
    silent.close()


def test_https_verifies_certificates_and_keeps_the_deadline(tls, tmp_path):
    base, silent, trusting = tls
    with pytest.raises(DownloadError, match="CERTIFICATE_VERIFY_FAILED"):
        fetch(f"{base}/ok", BODY_SHA, tmp_path / "a.txt")
    assert fetch(f"{base}/ok", BODY_SHA, tmp_path / "a.txt", ssl_context=trusting) == len(BODY)
    for url in (f"{base}/drip", f"{silent}/never"):  # a dripping body, and a handshake that never ends
        t0 = time.monotonic()
        with pytest.raises(DownloadError, match=r"not complete within deadline_s=1.5 s"):
            fetch(url, BODY_SHA, tmp_path / "b.txt", ssl_context=trusting, deadline_s=1.5)
        assert time.monotonic() - t0 < 5
    assert leftovers(tmp_path) == ["a.txt"]
