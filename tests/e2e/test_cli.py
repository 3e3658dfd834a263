"""The CLI as a user runs it, against the running system: `vlmq watch` follows a job to its end with
progress bars, `vlmq results --format md` writes Markdown."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_pipeline import KEY
from tests.fixtures.models import taught_pdf

pytestmark = pytest.mark.slow


def vlmq(env: dict[str, str], base: str, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # VLMQ_API__KEYS gives the CLI its key (the first pair's); a wide terminal keeps each bar on one line.
    cli_env = {**env, "VLMQ_API__BASE_URL": base, "COLUMNS": "200", "VLMQ_STATE_DIR": str(tmp)}
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args], env=cli_env, capture_output=True, text=True, timeout=300
    )


def test_watch_then_markdown_results(running_system: str, e2e_env: dict[str, str], tmp_path: Path) -> None:
    files = [
        ("file", ("watched.pdf", taught_pdf(), "application/pdf")),
        ("file", ("broken.pdf", b"%PDF-1.7\n1 0 obj <<", "application/pdf")),
    ]
    job_id = httpx.post(f"{running_system}/v1/jobs", files=files, headers=KEY, timeout=30).json()["id"]

    watched = vlmq(e2e_env, running_system, tmp_path, "watch", job_id, "--interval", "0.3")
    assert watched.returncode == 0, watched.stdout + watched.stderr
    out = watched.stdout
    print(out)  # what a user saw last: shown by pytest -s and on failure
    assert f"job {job_id}" in out
    docs = re.search(r"documents .*? 2/2 +1 failed +(\d+\.\d\d)/s +ETA 0:00:00 .*completed", out)
    pages = re.search(r"pages .*? 3/3 +0 failed +(\d+\.\d\d)/s +ETA 0:00:00 .*completed", out)
    assert docs and pages, out
    assert float(pages.group(1)) > 0

    md = tmp_path / "results.md"
    written = vlmq(e2e_env, running_system, tmp_path, "results", job_id, "--format", "md", "-o", str(md))
    assert written.returncode == 0, written.stderr
    text = md.read_text()
    assert text.startswith(f"# Job {job_id}\n")
    page1 = text.split("## watched.pdf", 1)[1].split("### Page 2", 1)[0]
    assert "### Page 1" in page1 and "Quarterly report" in page1
    assert "<details><summary>Reasoning</summary>\n\nA title page.\n\n</details>" in page1
    assert "## broken.pdf" in text and "**Error `corrupt_media`**" in text
