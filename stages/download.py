"""download@<name>: fetches the files of params ``downloads.<name>`` into data/downloads/<name>/.

Each entry maps a relative file path to ``{url, sha256}`` (plus optional ``max_bytes``,
``deadline_s``, ``allow_file_url``; see zhnlp/data/download.py); the sha256 pins the content,
so DVC's params tracking makes the download reproducible. An entry with ``extract`` is a zip,
tar or tar.gz archive (sha256 of the archive) whose selected members land in the folder
(zhnlp/data/archive.py documents the fields)::

    downloads:
      clue:
        tnews_public.zip:
          url: https://storage.googleapis.com/cluebenchmark/tasks/tnews_public.zip
          sha256: <64 hex characters>
          extract: {members: [train.json, dev.json, test.json, labels.json], dest: tnews}

gives data/downloads/clue/tnews/{train,dev,test,labels}.json (optional: ``strip_components``,
``format``, ``max_bytes``, ``max_members``, ``keep_archive``). Metrics: entries, bytes
downloaded, files and bytes extracted. Under ``dvc repro`` the name comes from DVC_STAGE;
by hand: ``python -m stages.download NAME``.
"""

from __future__ import annotations

import shutil

from stages.common import ROOT, StageRun, run, stage_item, stage_params, write_json
from zhnlp.data.download import download_specs, fetch_into


def main() -> None:
    name = stage_item("download", "downloads")
    params = stage_params(f"downloads.{name}")
    files = download_specs(params[f"downloads.{name}"], f"downloads.{name}")
    out_dir = ROOT / "data" / "downloads" / name
    shutil.rmtree(out_dir, ignore_errors=True)
    with StageRun(f"download@{name}", params) as tracking:
        done = fetch_into(files, out_dir)
        metrics = {"files": len(files), "bytes": done.bytes, "extracted_files": done.extracted_files, "extracted_bytes": done.extracted_bytes}
        write_json(ROOT / "reports" / "download" / f"{name}.json", metrics)
        tracking.log_metrics(metrics)


if __name__ == "__main__":
    run(main)
