"""The CLI's ordinary failures, as a user meets them against the running system: one line on stderr
(``vlmq: CODE: MESSAGE``), no traceback, and the exit code of README's table (api.cli.failures)."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from api.cli.devstack import free_port
from tests.e2e.test_cli import vlmq

pytestmark = pytest.mark.slow

BROKEN_PDF = b"%PDF-1.7\n1 0 obj <<"  # prep fails it at once: the jobs made here cost the workers nothing


def one_line(run: subprocess.CompletedProcess[str], exit_code: int) -> str:
    """The failure's one stderr line, after checking the exit code and that no traceback was shown."""
    shown = run.stdout + run.stderr
    assert run.returncode == exit_code, shown
    assert "Traceback" not in shown, shown
    lines = run.stderr.splitlines()
    assert len(lines) == 1, shown
    return lines[0]


@pytest.mark.parametrize(
    "command", [["status"], ["cancel"], ["retry"], ["results"], ["watch"], ["results", "--format", "md"]]
)
def test_unknown_job_is_not_found_in_every_job_command(
    running_system: str, e2e_env: dict[str, str], tmp_path: Path, command: list[str]
) -> None:
    job_id = str(uuid.uuid4())
    run = vlmq(e2e_env, running_system, tmp_path, command[0], job_id, *command[1:])
    line = one_line(run, 3)
    assert line.startswith("vlmq: not_found: ") and line.endswith(" (HTTP 404)"), line


def test_reused_idempotency_key_is_a_conflict(
    running_system: str, e2e_env: dict[str, str], tmp_path: Path
) -> None:
    pdf = tmp_path / "broken.pdf"
    pdf.write_bytes(BROKEN_PDF)
    key = f"cli-conflict-{uuid.uuid4()}"
    first = vlmq(e2e_env, running_system, tmp_path, "submit", str(pdf), "--idempotency-key", key)
    assert first.returncode == 0, first.stdout + first.stderr
    other = ["--prompt", "Another prompt.", "--idempotency-key", key]
    line = one_line(vlmq(e2e_env, running_system, tmp_path, "submit", str(pdf), *other), 4)
    assert line.startswith("vlmq: conflict: ") and line.endswith(" (HTTP 409)"), line


def test_invalid_option_names_the_first_problem(
    running_system: str, e2e_env: dict[str, str], tmp_path: Path
) -> None:
    pdf = tmp_path / "broken.pdf"
    pdf.write_bytes(BROKEN_PDF)
    line = one_line(vlmq(e2e_env, running_system, tmp_path, "submit", str(pdf), "--dpi", "5"), 5)
    assert line.startswith("vlmq: invalid_request: request failed validation (options.dpi: "), line
    assert line.endswith(" (HTTP 422)"), line


def test_unknown_key_is_unauthorized(running_system: str, e2e_env: dict[str, str], tmp_path: Path) -> None:
    env = {**e2e_env, "VLMQ_API__KEYS": "not-a-key:nobody"}
    line = one_line(vlmq(env, running_system, tmp_path, "status", str(uuid.uuid4())), 6)
    assert line.startswith("vlmq: unauthorized: ") and line.endswith(" (HTTP 401)"), line


def test_unreachable_api(e2e_env: dict[str, str], tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    line = one_line(vlmq(e2e_env, closed, tmp_path, "status", str(uuid.uuid4())), 8)
    assert line.startswith(f"vlmq: api_unreachable: no answer from the API at {closed}/: "), line


def test_no_api_key_is_unauthorized(e2e_env: dict[str, str], tmp_path: Path) -> None:
    env = {k: v for k, v in e2e_env.items() if k != "VLMQ_API__KEYS"}  # and no dev key in the state dir
    line = one_line(vlmq(env, f"http://127.0.0.1:{free_port()}", tmp_path, "status", str(uuid.uuid4())), 6)
    assert line.startswith("vlmq: no_api_key: set VLMQ_API__KEYS or start `vlmq api` once"), line
