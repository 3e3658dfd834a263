"""PDF pages to images with pymupdf."""

from __future__ import annotations

from dataclasses import dataclass

import pymupdf

from jobs.errors import CorruptMedia, EmptyDocument, EncryptedDocument, TooManyPages


@dataclass(frozen=True)
class RenderedPage:
    page: int  # 1-based
    png: bytes
    width: int
    height: int


def open_pdf(data: bytes, password: str | None = None) -> pymupdf.Document:
    """Open and unlock a PDF, or raise the specific error that says what is wrong with it."""
    try:
        doc = pymupdf.open(stream=data, filetype="pdf")
    except (pymupdf.FileDataError, RuntimeError, ValueError) as e:
        raise CorruptMedia(f"not a readable PDF: {e}") from e
    if doc.needs_pass and not (password and doc.authenticate(password)):
        doc.close()
        hint = "the password given is wrong" if password else "no password was given"
        raise EncryptedDocument(f"the PDF is encrypted and {hint}")
    if doc.page_count == 0:
        doc.close()
        raise EmptyDocument("the PDF has no pages")
    return doc


def pdf_page_count(data: bytes) -> int:
    doc = open_pdf(data)
    try:
        return int(doc.page_count)
    finally:
        doc.close()


def render_pdf(
    data: bytes, *, longest_side: int = 1288, max_pages: int, password: str | None = None
) -> list[RenderedPage]:
    """Every page as PNG, scaled so its longest side (after the page's own rotation) is ``longest_side``."""
    doc = open_pdf(data, password)
    try:
        if doc.page_count > max_pages:
            raise TooManyPages(f"the PDF has {doc.page_count} pages; the limit is {max_pages}")
        return [_render(doc[i], i + 1, longest_side) for i in range(doc.page_count)]
    finally:
        doc.close()


def _render(page: pymupdf.Page, number: int, longest_side: int) -> RenderedPage:
    rect = page.rect  # already rotated: pymupdf applies /Rotate to the page rectangle
    scale = longest_side / max(rect.width, rect.height)
    try:
        pix = page.get_pixmap(matrix=pymupdf.Matrix(scale, scale), alpha=False, colorspace=pymupdf.csRGB)
    except RuntimeError as e:
        raise CorruptMedia(f"page {number} cannot be rendered: {e}") from e
    return RenderedPage(page=number, png=pix.tobytes("png"), width=pix.width, height=pix.height)
