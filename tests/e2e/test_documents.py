"""The fixture corpus, submitted over HTTP and with `vlmq submit` to separately running API and workers
(the taught tiny model on CPU): every bad file fails alone with its own error code, every odd but
good file gives its pages, and the job completes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_pipeline import KEY, results_by_custom_id, wait_done
from tests.fixtures.make_fixtures import EXPECTED, OFFICE_PAGES, PAGES, PASSWORD
from workers.media.office import converter_path

pytestmark = pytest.mark.slow

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PAGE_LIMIT = 20  # too_many_pages.pdf has 30; the e2e system runs with this limit (conftest)


def test_every_fixture_fails_alone_or_gives_its_pages(running_system: str) -> None:
    names = [*EXPECTED, *PAGES, *OFFICE_PAGES]
    files = [("file", (n, (FIXTURES / n).read_bytes(), "application/octet-stream")) for n in names]
    r = httpx.post(f"{running_system}/v1/jobs", files=files, headers=KEY, timeout=60)
    assert r.status_code == 202, r.text
    job = wait_done(running_system, r.json()["id"], timeout=600)
    assert job["status"] == "completed"
    by_file = results_by_custom_id(running_system, job["id"])
    assert set(by_file) == set(names)
    for name, code in EXPECTED.items():
        (line,) = by_file[name]
        assert (line["status"], line["error"]["code"]) == ("failed", code), name
    office = OFFICE_PAGES if converter_path("soffice") else {}
    for name, pages in {**PAGES, **office}.items():
        assert [x["page"] for x in by_file[name]] == list(range(1, pages + 1)), name
        assert all(x["status"] == "succeeded" and x["usage"]["completion_tokens"] > 0 for x in by_file[name])
    for name in set(OFFICE_PAGES) - set(office):  # no LibreOffice on this machine: the error says so
        assert by_file[name][0]["error"]["code"] == "converter_missing", name
    assert "first_frame_only" in by_file["animated.gif"][0]["flags"]
    assert "image_downscaled" in by_file["huge_dimensions.png"][0]["flags"]
    assert by_file["rotated_90.pdf"][0]["text_uri"].endswith("/text/page-00001.txt")
    failed = len(EXPECTED) + len(set(OFFICE_PAGES) - set(office))
    assert job["request_counts"] == {
        "total": len(names),
        "completed": len(names) - failed,
        "failed": failed,
        "cancelled": 0,
        "expired": 0,
    }


def test_vlmq_submit_with_options(running_system: str, e2e_env: dict[str, str], tmp_path: Path) -> None:
    env = {**e2e_env, "VLMQ_API__BASE_URL": running_system}
    cli = [sys.executable, "-m", "api.cli"]
    args = ["--password", PASSWORD, "--task", "ocr", "--granularity", "document", "--text-hint", "--wait"]
    files = [str(FIXTURES / "encrypted.pdf"), str(FIXTURES / "rotated_90.pdf")]
    done = subprocess.run(
        [*cli, "submit", *files, *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    job_id = done.stdout.split("job ", 1)[1].split()[0]
    out = tmp_path / "results.jsonl"
    got = subprocess.run([*cli, "results", job_id, "-o", str(out)], env=env, capture_output=True, timeout=60)
    assert got.returncode == 0, got.stderr
    lines = {x["custom_id"]: x for x in map(json.loads, out.read_text().splitlines())}
    assert set(lines) == {"encrypted.pdf", "rotated_90.pdf"}
    for line in lines.values():  # one document-level result each, the OCR preset with the text hint
        assert (line["status"], line["page"], line["pages"]) == ("succeeded", None, [1])
        assert line["prompt_version"] == "ocr-v1+text-hint-v1"
    bad = subprocess.run(
        [*cli, "submit", files[0], "--pages", "2-1"], env=env, capture_output=True, text=True, timeout=60
    )
    assert bad.returncode != 0 and "bad page range '2-1'" in bad.stdout + bad.stderr
