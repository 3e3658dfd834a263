"""``python -m tests.soak`` (what `vlmq soak` and `make soak` run): a whole system soaked for simulated
days under three kinds of users and random faults; the report printed and written as JSON. Exit status
1 when any invariant was violated."""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
from pathlib import Path

from tests.soak import config
from tests.soak.runner import run


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__)
    p.add_argument("--size", choices=("ci", "full"), default="full", help="the preset (default full)")
    p.add_argument("--days", type=float, help="simulated days (default: the preset's)")
    p.add_argument("--items", type=int, help="items submitted in all, about")
    p.add_argument("--faults", type=int, help="faults injected, at least")
    p.add_argument("--seed", type=int, help="random seed (default 22)")
    p.add_argument("--report", type=Path, default=Path("soak-report.json"), help="the JSON report")
    p.add_argument("--keep", action="store_true", help="keep the system's folder (logs) afterwards")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("tests.soak").setLevel(logging.INFO)
    cfg = config.ci() if args.size == "ci" else config.full()
    given = {k: getattr(args, k) for k in ("days", "items", "faults", "seed") if getattr(args, k) is not None}
    cfg = cfg.scaled(**given)
    root = Path(tempfile.mkdtemp(prefix="vlmq-soak-"))
    try:
        report = run(cfg, root)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(report.text())
    report.write(args.report)
    print(f"report written to {args.report}" + (f"; logs in {root}" if args.keep else ""))
    return 1 if report.violation_count else 0


if __name__ == "__main__":
    sys.exit(main())
