"""`vlmq soak` runs the harness of a source checkout, and says so clearly outside one."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from api.cli import app
from api.cli.soak import find_checkout

REPO = Path(__file__).resolve().parents[2]


def test_the_checkout_is_found_from_any_folder_inside_it() -> None:
    assert find_checkout([REPO / "tests" / "unit"]) == REPO


def test_outside_a_checkout_it_stops_with_one_line_and_exit_2(tmp_path: Path) -> None:
    assert find_checkout([tmp_path]) is None
    result = CliRunner().invoke(app, ["soak", "--checkout", str(tmp_path)])
    assert result.exit_code == 2
    assert "not_a_checkout" in result.stderr and "tests/soak" in result.stderr
