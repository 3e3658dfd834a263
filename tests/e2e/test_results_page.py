"""The results page in headless Chromium (Debian's chromium driven by Playwright, no browser download):
sign-in, the jobs list with progress, each page's image beside its answer, the reasoning folded,
errors in red, a video shown as its frames, and nothing of another tenant's. Writes screenshots to
tests/artifacts/."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.e2e.test_pipeline import KEY, wait_done
from tests.fixtures.models import taught_pdf
from tests.fixtures.videos import GOOD

pytestmark = pytest.mark.slow

CHROMIUM = (
    os.environ.get("VLMQ_TEST_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
)
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
RED = "rgb(197, 34, 31)"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM:
        if os.environ.get("CI"):
            pytest.fail("no chromium in CI: .ci/run installs Debian's chromium package")
        pytest.skip("no chromium here: apt-get install chromium (CI installs it)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def job_id(running_system: str) -> str:
    files = [
        ("file", ("report.pdf", taught_pdf(), "application/pdf")),
        ("file", ("broken.pdf", b"%PDF-1.7\n1 0 obj <<", "application/pdf")),
    ]
    r = httpx.post(f"{running_system}/v1/jobs", files=files, headers=KEY, timeout=30)
    assert r.status_code == 202, r.text
    return str(wait_done(running_system, r.json()["id"])["id"])


@pytest.fixture(scope="module")
def video_job_id(running_system: str) -> str:
    """A job with a video beside a PDF: the video's unit holds a clip (a zip of frames), not a PNG."""
    files = [
        ("file", (GOOD, (FIXTURES / GOOD).read_bytes(), "video/mp4")),
        ("file", ("report.pdf", taught_pdf(), "application/pdf")),
    ]
    r = httpx.post(f"{running_system}/v1/jobs", files=files, headers=KEY, timeout=30)
    assert r.status_code == 202, r.text
    return str(wait_done(running_system, r.json()["id"])["id"])


def sign_in(page: Page, base: str, key: str) -> None:
    page.goto(f"{base}/ui/login")
    page.fill("input[name=api_key]", key)
    page.click("button[type=submit]")


def check_images_load(page: Page) -> None:
    """Every <img> on the page really loads and decodes: a broken image has naturalWidth 0."""
    for img in page.locator("img").all():
        img.scroll_into_view_if_needed()
        img.evaluate("i => i.complete || new Promise(ok => i.addEventListener('load', ok))")
        assert img.evaluate("i => i.naturalWidth") > 0, img.get_attribute("src")


def test_results_page(browser: Browser, running_system: str, job_id: str) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{running_system}/ui/jobs/{job_id}")
    assert page.url.endswith("/ui/login")  # no cookie: sign in first
    sign_in(page, running_system, "wrong-key")
    expect(page.locator("#login-error")).to_have_text("Unknown API key.")

    sign_in(page, running_system, "test-key")
    row = page.locator(f"#jobs tr[data-job='{job_id}']")
    expect(row.locator(".status")).to_have_text("completed")
    expect(row).to_contain_text("3/3")
    assert row.locator("progress").get_attribute("value") == "100"

    row.locator("a").click()
    sections = page.locator("section.page")
    expect(sections).to_have_count(4)
    first = page.locator("section[data-custom-id='report.pdf'][data-page='1']")
    expect(first.locator(".answer")).to_have_text("Quarterly report")
    reasoning = first.locator("details.reasoning")
    assert reasoning.evaluate("d => d.open") is False  # folded under the answer
    expect(reasoning.locator("pre")).to_be_hidden()
    reasoning.locator("summary").click()
    expect(reasoning.locator("pre")).to_have_text("A title page.")

    check_images_load(page)
    broken = page.locator("section[data-custom-id='broken.pdf'] p.error")
    expect(broken).to_contain_text("corrupt_media")
    assert broken.evaluate("e => getComputedStyle(e).color") == RED

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "results-page.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")
    assert shot.stat().st_size > 10_000


def test_a_video_shows_as_its_frames(browser: Browser, running_system: str, video_job_id: str) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    sign_in(page, running_system, "test-key")
    page.goto(f"{running_system}/ui/jobs/{video_job_id}")
    expect(page.locator(f"section[data-custom-id='{GOOD}'] img")).to_have_count(1)
    expect(page.locator("section[data-custom-id='report.pdf'] img")).to_have_count(3)
    check_images_load(page)  # the video's frames too, not a broken image

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "results-page-video.png"), full_page=True)


def test_another_tenant_sees_nothing(browser: Browser, running_system: str, job_id: str) -> None:
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, running_system, "other-key")
    expect(page.locator("header")).to_contain_text("tenant-b")
    assert page.locator(f"tr[data-job='{job_id}']").count() == 0
    assert page.goto(f"{running_system}/ui/jobs/{job_id}").status == 404  # type: ignore[union-attr]
    image = httpx.get(
        f"{running_system}/ui/jobs/{job_id}/pages/{job_id}.png", cookies={"vlmq_key": "other-key"}, timeout=10
    )
    assert image.status_code == 404
    context.close()
