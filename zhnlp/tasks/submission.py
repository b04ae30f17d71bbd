"""CLUE / FewCLUE submission files: one JSON line per test row, zipped for upload.

A submission file holds ``{"id": <id>, "label": "<label string>"}`` per row of the
unlabelled ``test`` split, in file order. The upload is one zip of such files at the
archive root; :func:`zip_submissions` builds it (deterministically: fixed timestamps,
sorted names), for one task or for all tasks of a leaderboard.

File names follow the benchmark the test set belongs to:

- **CLUE 1.1** (CLUE's submission rules, update of 2021-09-04: ``<task>_predict.json``,
  with the version appended for the re-released test sets): ``afqmc_predict.json``,
  ``cmnli_predict.json``, ``csl_predict.json``, ``iflytek_predict.json``,
  ``ocnli_50k_predict.json``, ``tnews11_predict.json``, ``cluewsc11_predict.json``
  (``tnews10`` / ``cluewsc10`` for the 1.0 test sets; these replaced the original 2020
  names ``tnews_predict.json`` / ``cluewsc2020_predict.json``).
- **FewCLUE** (its baselines' ``predict_file`` table): ``tnewsf_predict.json``,
  ``iflytekf_predict.json``, ``ocnlif_predict.json``, ``cslf_predict.json``,
  ``cluewscf_predict.json``, ``bustm_predict.json``, ``eprstmt_predict.json``,
  ``csldcp_predict.json``, ``chidf_predict.json``.

A task whose prepared data has a ``test_public`` split comes from FewCLUE; otherwise
from CLUE (:func:`benchmark_of`). Any other task gets ``<task>_predict.json``.

The other task kinds (:func:`write_kind_submission`) use CLUE's formats: CMRC2018 one JSON object
``{question id: answer text}``; C3 and CHID ``{"id", "label": <choice index>}`` lines; CLUENER
``{"id", "label": {type: {entity text: [[start, end], ...]}}}`` lines, ends inclusive.

Ids: the prepared data keeps ids as strings; a submission writes a canonical decimal
id as a JSON integer (as the official files do), except for FewCLUE TNEWS, whose
official ``test.json`` and sample submission use string ids (``{"id": "0", ...}``).
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

SUBMISSION_FILES: dict[str, dict[str, str]] = {
    "clue": {
        "afqmc": "afqmc_predict.json",
        "cmnli": "cmnli_predict.json",
        "csl": "csl_predict.json",
        "iflytek": "iflytek_predict.json",
        "ocnli": "ocnli_50k_predict.json",
        "tnews": "tnews11_predict.json",
        "cluewsc": "cluewsc11_predict.json",
        "cmrc2018": "cmrc2018_predict.json",
        "c3": "c311_predict.json",
        "chid": "chid11_predict.json",
        "cluener": "cluener_predict.json",
    },
    "fewclue": {
        "tnews": "tnewsf_predict.json",
        "iflytek": "iflytekf_predict.json",
        "ocnli": "ocnlif_predict.json",
        "csl": "cslf_predict.json",
        "cluewsc": "cluewscf_predict.json",
        "bustm": "bustm_predict.json",
        "eprstmt": "eprstmt_predict.json",
        "csldcp": "csldcp_predict.json",
        "chid": "chidf_predict.json",
    },
}
STRING_IDS = {("fewclue", "tnews")}  # official files with "id": "0"
BENCHMARKS = tuple(SUBMISSION_FILES)
_CANONICAL_INT = re.compile(r"0|-?[1-9][0-9]*")
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def benchmark_of(splits: Iterable[str]) -> str:
    """"fewclue" if the prepared task has a labelled test_public split, else "clue"."""
    return "fewclue" if "test_public" in set(splits) else "clue"


def submission_filename(task: str, benchmark: str = "clue") -> str:
    if benchmark not in SUBMISSION_FILES:
        raise ValueError(f"unknown benchmark {benchmark!r}; known: {BENCHMARKS}")
    names = SUBMISSION_FILES[benchmark]
    return names.get(task) or SUBMISSION_FILES["clue"].get(task) or f"{task}_predict.json"


def json_id(row_id: str, keep_string: bool = False) -> int | str:
    """A prepared (string) id as the submission writes it."""
    text = str(row_id)
    return int(text) if not keep_string and _CANONICAL_INT.fullmatch(text) else text


def write_submission(path: str | Path, ids: Sequence[str], labels: Sequence[str], *, keep_string_ids: bool = False) -> Path:
    """One ``{"id", "label"}`` JSON line per row (UTF-8, no ASCII escaping)."""
    if len(ids) != len(labels):
        raise ValueError(f"{len(ids)} ids but {len(labels)} labels")
    if len(set(map(str, ids))) != len(ids):
        raise ValueError("submission ids must be unique")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as fh:
        for row_id, label in zip(ids, labels):
            fh.write(json.dumps({"id": json_id(row_id, keep_string_ids), "label": str(label)}, ensure_ascii=False) + "\n")
    return path


def write_task_submission(out_dir: str | Path, task: str, benchmark: str, ids: Sequence[str], labels: Sequence[str]) -> Path:
    """The task's official file name under ``out_dir``, with the benchmark's id convention."""
    name = submission_filename(task, benchmark)
    return write_submission(Path(out_dir) / name, ids, labels, keep_string_ids=(benchmark, task) in STRING_IDS)


def zip_submissions(files: Iterable[str | Path], out_zip: str | Path) -> Path:
    """Zip submission files at the archive root (sorted, fixed timestamps: same inputs, same bytes)."""
    paths = sorted((Path(f) for f in files), key=lambda p: p.name)
    names = [p.name for p in paths]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"two submission files share a name: {duplicates}")
    out_zip = Path(out_zip)
    out_zip.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out_zip, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in paths:
            info = zipfile.ZipInfo(path.name, date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, path.read_bytes())
    return out_zip


def write_kind_submission(out_dir: str | Path, task: str, benchmark: str, kind: str, ids: Sequence[str], predictions: Sequence) -> Path:
    """The submission of a span-extraction, multiple-choice, idiom-cloze or NER task (formats above)."""
    if len(ids) != len(predictions):
        raise ValueError(f"{len(ids)} ids but {len(predictions)} predictions")
    if len(set(map(str, ids))) != len(ids):
        raise ValueError("submission ids must be unique")
    path = Path(out_dir) / submission_filename(task, benchmark)
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "span_extraction":
        path.write_text(json.dumps({str(i): str(p) for i, p in zip(ids, predictions)}, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        return path
    with path.open("w", encoding="utf-8", newline="\n") as fh:
        for row_id, pred in zip(ids, predictions):
            if kind == "ner":
                label: dict = {}
                for e in pred:
                    label.setdefault(e["type"], {}).setdefault(e["text"], []).append([int(e["start"]), int(e["end"])])
            else:
                label = int(pred)
            fh.write(json.dumps({"id": json_id(row_id), "label": label}, ensure_ascii=False) + "\n")
    return path
