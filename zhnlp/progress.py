"""Progress bars for the long loops: prepare (rows), encode (documents), training, decoding (examples).

A bar is on when stderr is a terminal — a user running ``dvc repro`` or a stage by hand sees it —
and off otherwise: the Prefect flow captures stage output into its logs, CI keeps its logs, and
neither gets ``\\r`` redraws. The environment variable ``ZHNLP_PROGRESS`` overrides that:

- ``ZHNLP_PROGRESS=1``: always on (e.g. ``dvc repro 2>log`` where the log is read with ``tail -f``);
- ``ZHNLP_PROGRESS=0``: always off;
- unset or empty: on when stderr is a terminal.

These bars go to stderr only, redraw at most once a second (``mininterval``), and never touch an
output file: a stage's outputs are the same, byte for byte, with a bar or without. Off, :func:`progress`
returns the iterable itself and :func:`counter` a do-nothing object, so there is no cost at all.
:func:`write` prints a line without tearing an open bar. Training bars are the Trainer's own
(``disable_tqdm`` in :func:`zhnlp.train.arguments.training_arguments`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from zhnlp.errors import UserError

ENV = "ZHNLP_PROGRESS"
MININTERVAL = 1.0  # seconds between redraws

T = TypeVar("T")


def enabled() -> bool:
    """Whether bars are shown: ``ZHNLP_PROGRESS`` (1 on, 0 off) or, unset, whether stderr is a terminal."""
    value = os.environ.get(ENV, "").strip()
    if value == "1":
        return True
    if value == "0":
        return False
    if value:
        raise UserError(f"{ENV}: {value!r} is not allowed; use 1 (bars on), 0 (off) or leave it unset (on when stderr is a terminal)")
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stderr
        return False


def _bar(desc: str, total: int | None, unit: str, iterable: Iterable | None = None) -> Any:
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, total=total, unit=f" {unit}", mininterval=MININTERVAL, file=sys.stderr, dynamic_ncols=True)


def progress(iterable: Iterable[T], desc: str, *, total: int | None = None, unit: str = "rows") -> Iterable[T]:
    """``iterable`` with a bar (count and rate; a percentage when ``total`` is known), or unchanged when off."""
    if not enabled():
        return iterable
    return _bar(desc, total, unit, iterable)


def write(message: str) -> None:
    """Print a line to stdout without tearing an open bar (it is cleared, the line written, the bar redrawn)."""
    if enabled():
        from tqdm import tqdm

        tqdm.write(message, file=sys.stdout)
        sys.stdout.flush()
    else:
        print(message, flush=True)


class _Off:
    def update(self, n: int = 1) -> None:
        pass


@contextmanager
def counter(desc: str, *, total: int | None = None, unit: str = "rows", show: bool = True) -> Iterator[Any]:
    """A bar advanced by hand (``.update(n)``), for loops over batches that tick once per example.

    ``show=False`` turns it off whatever :func:`enabled` says (a caller's one-example calls, e.g. a chat turn).
    """
    if not (show and enabled()):
        yield _Off()
        return
    bar = _bar(desc, total, unit)
    try:
        yield bar
    finally:
        bar.close()
