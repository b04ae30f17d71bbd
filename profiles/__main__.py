"""``python -m profiles NAME [PARAMS]``: switch params.yaml (or PARAMS) to the data profile NAME."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from profiles import apply_profile, available, load_profile
from zhnlp.errors import UserError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m profiles", description=__doc__)
    parser.add_argument("name", help=f"one of: {', '.join(available())}")
    parser.add_argument("params", nargs="?", default=str(Path(__file__).resolve().parents[1] / "params.yaml"))
    args = parser.parse_args(argv)
    try:
        changed = apply_profile(load_profile(args.name), args.params)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"profile {args.name}: " + (f"set {', '.join(changed)} in {args.params}" if changed else f"{args.params} already uses it"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
