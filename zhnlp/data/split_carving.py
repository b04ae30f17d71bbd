"""Carve missing splits out of a shipped one, by a stable hash of each row (``<corpus>.carve`` params).

Real samples rarely ship every split a training stage needs: the Ape210K sample has only
``valid.ape.json``, the LCCC toy files have no test split. ``carve`` moves a fixed share of one split's
rows into a new split, chosen by a hash of the row's key (the problem id, the dialogue text), so:

- the choice is the same on every run and every machine (bitwise reproducible outputs);
- a row's split does not depend on the order or number of the other rows;
- nothing is held in memory: each row is routed as it streams past.

Params (strict), e.g. for the Ape210K sample::

    splits: {valid: valid.ape.json}
    carve:
      train: {of: valid, share: 0.8}
      test: {of: valid, share: 0.1}     # what is left (about 10%) stays in valid

Carves of one source take consecutive hash ranges in the order written; their shares must sum
to less than 1, so the source split keeps some rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zhnlp.config import ConfigError, check_name, from_params, in_range, require_mapping


@dataclass(frozen=True)
class Carve:
    """One carved split: ``share`` of the rows of split ``of``."""

    of: str
    share: float


def stable_fraction(key: str, salt: str = "") -> float:
    """A number in [0, 1) from the blake2b hash of ``salt + key``: the same everywhere, uniform over keys."""
    digest = hashlib.blake2b((salt + key).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def parse_carves(entry: Any, splits: Iterable[str], where: str) -> dict[str, Carve]:
    """``<corpus>.carve`` checked against the shipped ``splits``: {new split: Carve}."""
    splits = list(splits)
    carves: dict[str, Carve] = {}
    totals: dict[str, float] = {}
    for name, spec in require_mapping(where, entry or {}).items():
        check_name(where, name)
        carve = from_params(Carve, spec, f"{where}.{name}")
        if name in splits:
            raise ConfigError(f"{where}.{name}: {name!r} is already a shipped split; carve a new split name")
        if carve.of not in splits:
            raise ConfigError(f"{where}.{name}.of: {carve.of!r} is not allowed; use one of the shipped splits {', '.join(splits)}")
        in_range(f"{where}.{name}.share", carve.share, 0.0, 1.0, high_open=True)
        if carve.share <= 0:
            raise ConfigError(f"{where}.{name}.share: {carve.share!r} is not allowed; use a number in (0, 1)")
        totals[carve.of] = totals.get(carve.of, 0.0) + carve.share
        if totals[carve.of] >= 1.0:
            raise ConfigError(f"{where}: the shares carved out of {carve.of!r} sum to {totals[carve.of]:g}; keep them below 1")
        carves[name] = carve
    return carves


class SplitRouter:
    """Which split each row of a shipped split goes to, by :func:`stable_fraction` of its key."""

    def __init__(self, carves: Mapping[str, Carve]):
        self.ranges: dict[str, list[tuple[str, float, float]]] = {}
        for name, carve in carves.items():
            ranges = self.ranges.setdefault(carve.of, [])
            low = ranges[-1][2] if ranges else 0.0
            ranges.append((name, low, low + carve.share))

    def targets(self, source: str) -> list[str]:
        """The splits that rows of ``source`` can land in: itself, then its carves."""
        return [source, *(name for name, _, _ in self.ranges.get(source, []))]

    def route(self, source: str, key: str) -> str:
        ranges = self.ranges.get(source)
        if not ranges:
            return source
        h = stable_fraction(key, "carve:")
        return next((name for name, low, high in ranges if low <= h < high), source)


class RoutedSinks:
    """One writer per target split of a shipped split; rows go where the router sends them.

    ``make_sink(path)`` opens a writer with ``write(row)`` and ``close()`` (a ParquetSink);
    ``on_row(split, row)`` sees each written row (split statistics).
    """

    def __init__(self, router: SplitRouter, source: str, out_dir: Path, make_sink, on_row=None):
        self.router, self.source = router, source
        self._stack = ExitStack()
        self.sinks = {s: self._stack.enter_context(make_sink(Path(out_dir) / f"{s}.parquet")) for s in router.targets(source)}
        self.on_row = on_row

    def write(self, row: dict, key: str) -> None:
        split = self.router.route(self.source, key)
        self.sinks[split].write(row)
        if self.on_row:
            self.on_row(split, row)

    def __enter__(self) -> "RoutedSinks":
        return self

    def __exit__(self, *exc) -> None:
        self._stack.__exit__(*exc)



def missing_splits_message(data_dir: Path, splits: Iterable[str], corpus: str, stage: str) -> str | None:
    """Why ``stage`` cannot find the prepared ``splits`` of ``corpus`` under ``data_dir``, or None when all are there.

    None prepared: the prep stage has not run. Some: the files ship fewer splits than the stage needs,
    and the fix is in params (``<corpus>.splits`` or ``<corpus>.carve``), not in rerunning prep.
    """
    splits = list(splits)
    missing = [s for s in splits if not (Path(data_dir) / f"{s}.parquet").is_file()]
    if not missing:
        return None
    hint = (f"run `dvc repro prepare_{corpus}`" if len(missing) == len(splits) else
            f"{stage} trains on train and evaluates on valid and test: add the missing splits to {corpus}.splits, "
            f"or carve them out of a shipped one with {corpus}.carve (README: Real data)")
    return f"missing {', '.join(f'{data_dir}/{s}.parquet' for s in missing)}: {hint}"
