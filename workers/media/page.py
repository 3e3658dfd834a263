"""What every renderer returns (pages as PNG) and takes (how to render, which pages, what limits)."""

from __future__ import annotations

from dataclasses import dataclass

from jobs import pagerange
from jobs.errors import TooManyPages


@dataclass(frozen=True)
class RenderedPage:
    page: int  # 1-based
    png: bytes
    width: int
    height: int
    # The PDF text layer: "" for a PDF page with no text (a scan), None where there is no layer (images).
    text: str | None = None
    flags: tuple[str, ...] = ()  # what was done to the page: image_downscaled, scaled_to_limit, ...


@dataclass(frozen=True)
class RenderOptions:
    longest_side: int = 1288  # pages (and larger images) are scaled to this longest side
    dpi: int | None = None  # PDF pages only: render at this DPI instead, capped at max_render_side
    pages: str | None = None  # page ranges, e.g. "1-3,7" (PDFs, office files, multi-page TIFFs)
    password: str | None = None
    max_pages: int = 500
    take: int | None = None  # only the first N selected pages (granularity "document")
    max_pixels: int = 100_000_000  # images with more pixels are refused from their header
    max_render_side: int = 4096
    name: str = ""  # the source's file name: only to word errors
    soffice: str = "soffice"
    office_timeout_s: float = 120.0

    @property
    def size_tag(self) -> int | str:
        """How the pages are sized, for content-addressed keys: 1288 (px) or "150dpi"."""
        return f"{self.dpi}dpi" if self.dpi else self.longest_side


def choose_pages(opts: RenderOptions, count: int, kind: str) -> tuple[list[int], tuple[str, ...]]:
    """The pages to render, checked against the page limit before any is rendered, and the flags."""
    pages = pagerange.select(opts.pages, count)
    flags: tuple[str, ...] = ()
    if opts.take is not None and len(pages) > opts.take:
        pages, flags = pages[: opts.take], ("document_pages_cut",)
    if len(pages) > opts.max_pages:
        if len(pages) == count:
            raise TooManyPages(f"the {kind} has {count} pages; the limit is {opts.max_pages}")
        raise TooManyPages(
            f"{len(pages)} of the {kind}'s {count} pages are selected; the limit is {opts.max_pages}"
        )
    return pages, flags
