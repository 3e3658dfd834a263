"""PDF pages to images with pymupdf.

Each bad file gets the error that says what is wrong with it (all permanent: retrying cannot help):
not a PDF or unparseable or cut short -> CorruptMedia; encrypted and no (right) password ->
EncryptedDocument; no pages -> EmptyDocument; more pages (selected) than allowed -> TooManyPages and
a page range beyond the last page -> PagesOutOfRange, both raised before any page is rendered. A page
that MuPDF cannot load or draw (a page tree that claims more pages than it holds) -> CorruptMedia naming
the page, raised when that page's turn comes.

``iter_pdf_pages`` makes every one of those up-front checks when it is called, then yields the pages one
at a time, so prep can send the first pages to inference while it renders the rest.

Each page is rendered after its own /Rotate (a landscape page stays landscape), to a longest side or at
a DPI (capped at ``max_render_side``, flag ``scaled_to_limit``), and its text layer is extracted.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pymupdf

from jobs.errors import CorruptMedia, EmptyDocument, EncryptedDocument
from workers.media.page import RenderedPage, RenderOptions, choose_pages
from workers.media.sniff import looks_like

__all__ = ["RenderedPage", "iter_pdf_pages", "open_pdf", "pdf_page_count", "render_pdf"]

# Readers accept junk before the header and after %%EOF, within this many bytes (Acrobat's rule).
_SLACK = 1024
# pymupdf raises RuntimeError subclasses; a few MuPDF errors come through its bindings' own base class.
_MUPDF_ERRORS = (RuntimeError, ValueError, pymupdf.mupdf.FzErrorBase)


def open_pdf(data: bytes, password: str | None = None) -> pymupdf.Document:
    """Open and unlock a PDF, or raise the specific error that says what is wrong with it."""
    _check_header(data)
    try:
        doc = pymupdf.open(stream=data, filetype="pdf")
    except _MUPDF_ERRORS as e:
        raise CorruptMedia(f"not a readable PDF: MuPDF cannot parse it ({e})") from e
    try:
        _check_document(doc, data, password)
    except BaseException:
        doc.close()
        raise
    return doc


def _check_header(data: bytes) -> None:
    if not data:
        raise CorruptMedia("not a readable PDF: the file is empty (0 bytes)")
    if b"%PDF-" not in data[:_SLACK]:
        raise CorruptMedia(f"not a readable PDF: no %PDF- header; the file looks like {looks_like(data)}")


def _check_document(doc: pymupdf.Document, data: bytes, password: str | None) -> None:
    # MuPDF silently rebuilds a broken cross-reference table. That rescues PDFs with bad offsets, but a
    # file cut short also "opens" that way, with pages missing or blank: no end marker means cut short.
    if doc.is_repaired and b"%%EOF" not in data[-_SLACK:]:
        raise CorruptMedia(f"not a readable PDF: it is truncated ({len(data)} bytes, no %%EOF at the end)")
    if doc.needs_pass and not (password and doc.authenticate(password)):
        hint = "the password given is wrong" if password else "no password was given"
        raise EncryptedDocument(f"the PDF is encrypted and {hint}")
    if doc.page_count == 0:
        raise EmptyDocument("the PDF has no pages")


def pdf_page_count(data: bytes, password: str | None = None) -> int:
    doc = open_pdf(data, password)
    try:
        return int(doc.page_count)
    finally:
        doc.close()


def render_pdf(data: bytes, opts: RenderOptions | None = None, **kw: Any) -> list[RenderedPage]:
    """The selected pages as PNG (with their text layers); ``kw`` overrides fields of ``opts``."""
    return list(iter_pdf_pages(data, opts, **kw))


def iter_pdf_pages(data: bytes, opts: RenderOptions | None = None, **kw: Any) -> Iterator[RenderedPage]:
    """The selected pages one at a time. Not a generator itself: opening, the password, the page count,
    the page limit and the page range are all checked here, before the first page is rendered."""
    opts = replace(opts or RenderOptions(), **kw)
    doc = open_pdf(data, opts.password)
    try:
        numbers, flags = choose_pages(opts, doc.page_count, "PDF")
    except BaseException:
        doc.close()
        raise
    return _pages(doc, numbers, opts, flags)


def _pages(
    doc: pymupdf.Document, numbers: list[int], opts: RenderOptions, flags: tuple[str, ...]
) -> Iterator[RenderedPage]:
    try:
        for n in numbers:
            yield _render(doc, n, opts, flags)
    finally:  # also when the reader stops early (the job was cancelled)
        doc.close()


def _scale(rect: pymupdf.Rect, opts: RenderOptions) -> tuple[float, tuple[str, ...]]:
    longest = max(rect.width, rect.height)  # already rotated: pymupdf applies /Rotate to the rectangle
    if opts.dpi is None:
        return opts.longest_side / longest, ()
    scale = opts.dpi / 72  # PDF space is 72 units per inch
    if longest * scale > opts.max_render_side:
        return opts.max_render_side / longest, ("scaled_to_limit",)
    return scale, ()


def _render(doc: pymupdf.Document, number: int, opts: RenderOptions, flags: tuple[str, ...]) -> RenderedPage:
    try:
        # Loading can fail too: a page tree whose /Count claims pages it does not hold (IndexError).
        page = doc[number - 1]
        scale, more = _scale(page.rect, opts)
        # RGB without alpha: a third less to rasterise and encode than RGBA, and what the model takes.
        pix = page.get_pixmap(matrix=pymupdf.Matrix(scale, scale), alpha=False, colorspace=pymupdf.csRGB)
        png = pix.tobytes("png")  # MuPDF's own encoder: as fast as Pillow's fastest level, smaller
        text = page.get_text("text").strip()
    except (*_MUPDF_ERRORS, IndexError) as e:
        raise CorruptMedia(f"page {number} cannot be rendered: {e}") from e
    return RenderedPage(number, png, pix.width, pix.height, text, (*flags, *more))
