"""download@<name>: fetches the files of params ``downloads.<name>`` into data/downloads/<name>/.

Each entry maps a relative file path to ``{url, sha256}``; the sha256 pins the content,
so DVC's params tracking makes the download reproducible.
"""

from __future__ import annotations

import argparse
import shutil

from stages.common import ROOT, StageRun, fail, stage_params, write_json
from zhnlp.download import ChecksumError, fetch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("name")
    name = parser.parse_args().name
    params = stage_params(f"downloads.{name}")
    files = params[f"downloads.{name}"]
    out_dir = ROOT / "data" / "downloads" / name
    shutil.rmtree(out_dir, ignore_errors=True)
    with StageRun(f"download@{name}", params) as run:
        total = 0
        for rel, entry in files.items():
            dest = (out_dir / rel).resolve()
            if not dest.is_relative_to(out_dir.resolve()):
                fail(f"downloads.{name}: {rel!r} points outside {out_dir}")
            try:
                total += fetch(entry["url"], entry["sha256"], dest)
            except (ChecksumError, ValueError, OSError, KeyError) as err:
                fail(f"downloads.{name}.{rel}: {err}")
        metrics = {"files": len(files), "bytes": total}
        write_json(ROOT / "reports" / "download" / f"{name}.json", metrics)
        run.log_metrics(metrics)


if __name__ == "__main__":
    main()
