"""Office files (DOC, DOCX, PPT, PPTX, ODT, ODP) to PDF with LibreOffice headless.

Each conversion runs in a fresh temporary directory with its own LibreOffice profile
(``-env:UserInstallation``): two conversions at once with a shared profile block on its lock, and a
profile left by a crashed run can make the next one hang. The whole process group is killed on
timeout, since ``soffice`` is a launcher that leaves ``soffice.bin`` running if only it is killed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from jobs.errors import ConversionFailed, ConversionTimeout, ConverterMissing


def converter_path(soffice: str) -> str | None:
    return shutil.which(soffice)


def convert_to_pdf(data: bytes, fmt: str, *, soffice: str = "soffice", timeout: float = 120.0) -> bytes:
    """The PDF LibreOffice makes of ``data`` (a file of format ``fmt``, e.g. "pptx")."""
    exe = converter_path(soffice)
    if exe is None:
        raise ConverterMissing(
            f"{fmt.upper()} files are converted to PDF by LibreOffice, and {soffice!r} is not installed on "
            "this worker (install libreoffice-writer and libreoffice-impress, or set VLMQ_MEDIA__SOFFICE)"
        )
    with tempfile.TemporaryDirectory(prefix="vlmq-office-") as tmp:
        src = Path(tmp) / f"input.{fmt}"
        src.write_bytes(data)
        _run(_command(exe, Path(tmp), src), timeout, fmt)
        out = Path(tmp) / "out" / "input.pdf"
        if not out.exists():
            raise ConversionFailed(f"LibreOffice made no PDF of this {fmt.upper()} (the file may be damaged)")
        return out.read_bytes()


def _command(exe: str, tmp: Path, src: Path) -> list[str]:
    return [
        exe,
        f"-env:UserInstallation={(tmp / 'profile').as_uri()}",
        "--headless",
        "--norestore",
        "--nolockcheck",
        "--convert-to",
        "pdf",
        "--outdir",
        str(tmp / "out"),
        str(src),
    ]


def _run(cmd: list[str], timeout: float, fmt: str) -> None:
    # stdin closed and a new session: LibreOffice never waits on a terminal, and its group can be killed.
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):  # it may have ended in between
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise ConversionTimeout(
            f"LibreOffice took over {timeout:g} s to convert this {fmt.upper()}"
        ) from None
    if proc.returncode != 0:
        tail = output.decode(errors="replace").strip()[-300:]
        raise ConversionFailed(f"LibreOffice failed on this {fmt.upper()} (exit {proc.returncode}): {tail}")
