"""Corpus downloads pinned by sha256, tested against an HTTP server on 127.0.0.1 serving ../shared/data."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import subprocess
import threading

import pytest
import yaml
from conftest import make_project, project_env
from shared_data import shared_data_dir

from zhnlp.download import ChecksumError, fetch


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
