"""PDF pages to images with pymupdf.

Each bad file gets the error that says what is wrong with it (all permanent: retrying cannot help):
not a PDF or unparseable or cut short -> CorruptMedia; encrypted and no (right) password ->
EncryptedDocument; no pages -> EmptyDocument; more pages than allowed -> TooManyPages, raised before
any page is rendered.
"""

from __future__ import annotations

from dataclasses import dataclass

import pymupdf

from jobs.errors import CorruptMedia, EmptyDocument, EncryptedDocument, TooManyPages

# Readers accept junk before the header and after %%EOF, within this many bytes (Acrobat's rule).
_SLACK = 1024
# pymupdf raises RuntimeError subclasses; a few MuPDF errors come through its bindings' own base class.
_MUPDF_ERRORS = (RuntimeError, ValueError, pymupdf.mupdf.FzErrorBase)


@dataclass(frozen=True)
class RenderedPage:
    page: int  # 1-based
    png: bytes
    width: int
    height: int


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
        raise CorruptMedia(f"not a readable PDF: no %PDF- header; the file starts with {data[:24]!r}")


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
        # RGB without alpha: a third less to rasterise and encode than RGBA, and what the model takes.
        pix = page.get_pixmap(matrix=pymupdf.Matrix(scale, scale), alpha=False, colorspace=pymupdf.csRGB)
        png = pix.tobytes("png")  # MuPDF's own encoder: as fast as Pillow's fastest level, smaller
    except _MUPDF_ERRORS as e:
        raise CorruptMedia(f"page {number} cannot be rendered: {e}") from e
    return RenderedPage(page=number, png=png, width=pix.width, height=pix.height)
