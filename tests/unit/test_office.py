"""Office conversion with LibreOffice: the real converter when installed, and each way it can fail.

The failure paths run real processes (small shell scripts standing in for a broken or hung
``soffice``), so the timeout really kills a process group and the missing converter is really missing.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from jobs.errors import ConversionFailed, ConversionTimeout, ConverterMissing
from tests.fixtures import office
from workers.media.office import convert_to_pdf, converter_path
from workers.media.pdf import render_pdf


def _script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "fake-soffice"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return str(path)


def test_a_missing_converter_is_named() -> None:
    with pytest.raises(ConverterMissing, match="PPTX files are converted to PDF by LibreOffice") as info:
        convert_to_pdf(office.pptx(["a"]), "pptx", soffice="/nonexistent/soffice")
    assert info.value.code == "converter_missing"


def test_a_converter_that_fails_is_reported_with_its_output(tmp_path: Path) -> None:
    soffice = _script(tmp_path, "echo 'Error: source file could not be loaded' >&2; exit 1")
    with pytest.raises(ConversionFailed, match=r"exit 1.*could not be loaded"):
        convert_to_pdf(b"x", "docx", soffice=soffice)


def test_a_converter_that_makes_nothing_is_a_failure(tmp_path: Path) -> None:
    with pytest.raises(ConversionFailed, match="made no PDF"):
        convert_to_pdf(b"x", "odp", soffice=_script(tmp_path, "exit 0"))


def test_a_hung_converter_is_killed_with_its_children(tmp_path: Path) -> None:
    marker = tmp_path / "child.pid"
    # Like soffice: a launcher whose child does the work; both must die.
    soffice = _script(tmp_path, f"sleep 60 & echo $! > {marker}; wait")
    t0 = time.monotonic()
    with pytest.raises(ConversionTimeout, match=r"took over 0\.5 s") as info:
        convert_to_pdf(b"x", "ppt", soffice=soffice, timeout=0.5)
    assert time.monotonic() - t0 < 5 and info.value.code == "conversion_timeout"
    child = int(marker.read_text())
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().split()[2] if Path(f"/proc/{pid}").exists() else "X"
    return state != "Z"  # a zombie is dead, only not yet reaped by its (killed) parent's parent


@pytest.mark.skipif(converter_path("soffice") is None, reason="LibreOffice (soffice) is not installed")
def test_libreoffice_converts_a_presentation_keeping_slides_and_text() -> None:
    pdf = convert_to_pdf(office.pptx(["Roadmap", "Budget"]), "pptx", timeout=120)
    pages = render_pdf(pdf, longest_side=400, max_pages=10)
    assert [(p.width, p.height, p.text) for p in pages] == [(400, 300, "Roadmap"), (400, 300, "Budget")]
