"""Calibration pages: a small sample of the user's own documents, in the shape the worker serves them.

AWQ picks its scales from the activations the calibration inputs produce, so they should look like
production: pages rendered as vlmq renders them, with the prompt vlmq sends. Sources: a folder of
images and PDFs, or a vlmq job whose pages were prepared (their PNGs are read back from S3).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from jobs.errors import VlmqError
from jobs.prompts.presets import DEFAULT
from jobs.service import JobService
from workers.media.images import decode_image
from workers.media.pdf import render_pdf
from workers.quantization.checks import QuantizeError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif"}


@dataclass(frozen=True)
class CalibrationPage:
    name: str  # where it came from, for messages: "report.pdf#3", "scan.png", "job/<id>/<custom_id>#2"
    image: Image.Image
    prompt: str


def pages_from_folder(
    folder: Path, limit: int, *, longest_side: int, max_pdf_pages: int, prompt: str | None = None
) -> list[CalibrationPage]:
    """Up to ``limit`` pages, taken in turn from each file (sorted by name) so that a long PDF does not
    crowd out the others. A file that cannot be read is skipped with a warning naming it and why."""
    if not folder.is_dir():
        raise QuantizeError(f"calibration folder {folder} does not exist or is not a folder")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and _usable(p))
    per_file = [_file_pages(p, longest_side, max_pdf_pages) for p in files]
    pages = list(_round_robin(per_file, limit))
    if not pages:
        raise QuantizeError(
            f"empty calibration set: no readable image or PDF page in {folder} "
            f"(looked for .pdf and {', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    text = prompt or DEFAULT.prompt
    return [CalibrationPage(name, img, text) for name, img in pages]


def pages_from_job(service: JobService, job_id: uuid.UUID, limit: int) -> list[CalibrationPage]:
    """Up to ``limit`` prepared pages of a job, in submission order, each with its job's prompt."""
    pages = []
    for ref in service.page_media(job_id, limit):
        try:
            image = decode_image(service.store.get(ref.media_key))
        except VlmqError as e:
            log.warning("calibration: skipping %r#%d: %s", ref.custom_id, ref.page, e)
            continue
        pages.append(CalibrationPage(f"job/{job_id}/{ref.custom_id}#{ref.page}", image, ref.prompt))
    if not pages:
        raise QuantizeError(f"empty calibration set: job {job_id} has no prepared page to read")
    return pages


def _usable(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES | {".pdf"} and not path.name.startswith(".")


def _file_pages(path: Path, longest_side: int, max_pdf_pages: int) -> Iterator[tuple[str, Image.Image]]:
    """The file's pages, rendered lazily: only the pages the sample takes cost rendering time."""
    try:
        data = path.read_bytes()
        if path.suffix.lower() != ".pdf":
            yield path.name, _fit(decode_image(data), longest_side)
            return
        for page in render_pdf(data, longest_side=longest_side, max_pages=max_pdf_pages):
            yield f"{path.name}#{page.page}", decode_image(page.png)
    except (VlmqError, OSError) as e:
        log.warning("calibration: skipping %s: %s", path, e)


def _fit(image: Image.Image, longest_side: int) -> Image.Image:
    """Images larger than a rendered page are scaled down as prep would; smaller ones are kept."""
    if max(image.size) <= longest_side:
        return image
    scale = longest_side / max(image.size)
    return image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)


def _round_robin(
    sources: list[Iterator[tuple[str, Image.Image]]], limit: int
) -> Iterator[tuple[str, Image.Image]]:
    taken, live = 0, list(sources)
    while live and taken < limit:
        for it in list(live):
            page = next(it, None)
            if page is None:
                live.remove(it)
                continue
            yield page
            taken += 1
            if taken == limit:
                return
