"""`vlmq quantize SRC DST`: the command's front end (calibration source, progress, summary)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from jobs.config import Settings
from jobs.errors import VlmqError
from workers.inference.tensor_parallel import GROUP_SIZES


def run_quantize(
    console: Console,
    err: Console,
    settings: Settings,
    src: Path,
    dst: Path,
    calibration: str,
    *,
    samples: int,
    device: str,
    prompt: str | None,
    group_size: int = 128,
) -> int:
    """Exit status: 0 done, 2 refused (the message says why)."""
    from workers.quantization.checkpoint import quantize_checkpoint
    from workers.quantization.checks import QuantizeError, check_destination, read_source_config

    try:
        if samples < 1:
            raise QuantizeError(f"--samples must be at least 1 (got {samples})")
        if group_size not in GROUP_SIZES:
            raise QuantizeError(
                f"--group-size must be one of {GROUP_SIZES}, the sizes vLLM's AWQ kernels take"
            )
        read_source_config(src, group_size)  # refuse before spending minutes on calibration
        check_destination(dst)
        with console.status("reading calibration pages"):
            pages = _pages(settings, calibration, samples, prompt)
        console.print(f"calibration: {len(pages)} pages from {calibration}")
        with _bars(console) as bars:
            report = quantize_checkpoint(src, dst, pages, device=device, progress=bars, group_size=group_size)
    except VlmqError as e:  # refusals, an unknown job, S3 or Postgres out of reach
        err.print(f"[red]vlmq quantize:[/] {e}")
        return 2
    _summary(console, report)
    return 0


def _pages(settings: Settings, calibration: str, samples: int, prompt: str | None) -> list[Any]:
    from workers.quantization.calibration import pages_from_folder, pages_from_job
    from workers.quantization.checks import QuantizeError

    job_id = _job_id(calibration)
    if job_id is None:
        limits = settings.limits
        return pages_from_folder(
            Path(calibration), samples, longest_side=limits.render_longest_side,
            max_pdf_pages=limits.max_pdf_pages, prompt=prompt,
        )  # fmt: skip
    if not settings.db.url:
        raise QuantizeError(
            f"{calibration} is read as a vlmq job id, which needs the job database: set VLMQ_DB__URL "
            "(and the VLMQ_S3__* settings), or give a folder of pages"
        )
    from jobs.service import build_service

    return pages_from_job(build_service(settings), job_id, samples)


def _job_id(calibration: str) -> uuid.UUID | None:
    """A job id unless a file or folder by that name exists."""
    if Path(calibration).exists():
        return None
    try:
        return uuid.UUID(calibration)
    except ValueError:
        return None


class _bars:
    """One progress bar per stage, fed by quantize_checkpoint's (stage, done, total) callback."""

    def __init__(self, console: Console) -> None:
        cols = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        self.progress = Progress(*cols, console=console)
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> _bars:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=total)
        self.progress.update(self.tasks[stage], completed=done)


def _summary(console: Console, report: Any) -> None:
    peak = f", peak GPU memory {report.peak_gpu_bytes / 2**30:.1f} GiB" if report.peak_gpu_bytes else ""
    console.print(
        f"wrote {report.destination}: {report.output_bytes / 2**20:.0f} MiB, {report.layers} decoder layers, "
        f"{report.samples} pages ({report.tokens} tokens) on {report.device} in {report.seconds:.1f} s{peak}"
    )
    console.print(
        f"serve it: VLMQ_MODEL__PATH={report.destination} VLMQ_MODEL__QUANTIZATION=awq "
        "(GPU, vLLM) or VLMQ_MODEL__PATH alone (CPU engine, unpacked to float)"
    )
    console.print(f"tensor parallel sizes it splits into on vLLM 0.26: {_tp_sizes(Path(report.destination))}")


def _tp_sizes(dst: Path) -> str:
    import json

    from workers.inference import tensor_parallel

    shapes = tensor_parallel.Shapes.from_config(json.loads((dst / "config.json").read_text()))
    return ", ".join(map(str, tensor_parallel.supported(shapes))) or "none"
