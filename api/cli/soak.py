"""`vlmq soak`: run the soak (tests/soak: a whole system of its own, three kinds of users, random faults,
the clock moved through simulated days, invariants checked) from a source checkout of vlmq. The harness
is test code, not installed with the package: outside a checkout the command says so and stops."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console

err = Console(stderr=True)
HARNESS = Path("tests") / "soak" / "__main__.py"
NOT_A_CHECKOUT = (
    "vlmq soak runs from a source checkout of vlmq: its harness (tests/soak) is not installed with the "
    "package. cd into a checkout (git clone, then `make soak`), or pass --checkout PATH"
)


def find_checkout(candidates: Iterable[Path]) -> Path | None:
    """The first candidate (or a folder above it) that holds the soak harness and the jobs package."""
    for c in candidates:
        for folder in (c.resolve(), *c.resolve().parents):
            if (folder / HARNESS).is_file() and (folder / "jobs" / "__init__.py").is_file():
                return folder
    return None


def _candidates(given: Path | None) -> list[Path]:
    if given is not None:
        return [given]
    import api

    return [Path.cwd(), Path(api.__file__).resolve().parents[1]]  # where this vlmq was installed from


def soak(
    size: Annotated[
        Literal["ci", "full"], typer.Option(help="ci: about 2 minutes; full: 7 days, 50,000 items, 24 faults")
    ] = "full",
    days: Annotated[float | None, typer.Option(help="Simulated days (default: the size's)")] = None,
    items: Annotated[int | None, typer.Option(help="Items the users submit in all, about")] = None,
    faults: Annotated[int | None, typer.Option(help="Faults injected, at least")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (default 22)")] = None,
    report: Annotated[Path, typer.Option(help="Where the JSON report goes")] = Path("soak-report.json"),
    keep: Annotated[bool, typer.Option(help="Keep the system's folder and logs afterwards")] = False,
    checkout: Annotated[Path | None, typer.Option(help="The vlmq checkout (default: found)")] = None,
) -> None:
    """Soak a whole system of its own for simulated days (RELIABILITY.md, "Soak"); exit 1 on a violation."""
    root = find_checkout(_candidates(checkout))
    if root is None:
        err.print(f"vlmq: not_a_checkout: {NOT_A_CHECKOUT}", soft_wrap=True, highlight=False)
        raise typer.Exit(2)
    args = ["--size", size, "--report", str(report.resolve())]
    given = {"--days": days, "--items": items, "--faults": faults, "--seed": seed}
    args += [str(a) for k, v in given.items() if v is not None for a in (k, v)]
    path = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "tests.soak", *args, *(["--keep"] if keep else [])]
    raise typer.Exit(subprocess.call(cmd, cwd=root, env={**os.environ, "PYTHONPATH": path}))


def register(app: typer.Typer) -> None:
    app.command()(soak)
