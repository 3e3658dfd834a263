"""PDF and image preparation: sizes, rotation, and one specific error per kind of bad file."""

from __future__ import annotations

from pathlib import Path

import pymupdf
import pytest
from PIL import Image

from jobs.errors import CorruptMedia, EmptyDocument, EncryptedDocument, TooManyPages
from tests.fixtures.make_fixtures import encrypted_pdf, text_pdf
from workers.media.images import decode_image, encode_png
from workers.media.pdf import pdf_page_count, render_pdf
from workers.prep import render_source

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def test_pages_are_scaled_to_the_longest_side() -> None:
    pages = render_pdf(text_pdf(3), longest_side=1288, max_pages=10)
    assert [p.page for p in pages] == [1, 2, 3]
    assert all(max(p.width, p.height) == 1288 for p in pages)
    assert decode_image(pages[0].png).size == (pages[0].width, pages[0].height)


def test_page_rotation_is_honoured() -> None:
    doc = pymupdf.open(stream=text_pdf(1), filetype="pdf")
    doc[0].set_rotation(90)
    (page,) = render_pdf(doc.tobytes(), longest_side=500, max_pages=10)
    doc.close()
    assert (page.width, page.height) == (500, 354)  # portrait A4 turned landscape


@pytest.mark.parametrize(
    ("fixture", "error", "needle"),
    [
        ("corrupt-truncated.pdf", CorruptMedia, "not a readable PDF"),
        ("not-a-pdf.pdf", CorruptMedia, "not a readable PDF"),
        ("encrypted-no-password.pdf", EncryptedDocument, "no password was given"),
    ],
)
def test_bad_pdfs_raise_specific_errors(fixture: str, error: type[Exception], needle: str) -> None:
    with pytest.raises(error, match=needle):
        render_pdf((FIXTURES / fixture).read_bytes(), max_pages=10)


def test_password_unlocks_and_a_wrong_one_is_named() -> None:
    data = encrypted_pdf("secret")
    assert len(render_pdf(data, max_pages=10, password="secret")) == 1
    with pytest.raises(EncryptedDocument, match="password given is wrong"):
        render_pdf(data, max_pages=10, password="nope")


def test_page_limit_is_checked_before_rendering() -> None:
    with pytest.raises(TooManyPages, match="has 4 pages; the limit is 3"):
        render_pdf(text_pdf(4), max_pages=3)
    assert pdf_page_count(text_pdf(4)) == 4


def test_zero_page_pdf() -> None:
    # pymupdf will not write a page-less PDF, so this one is written by hand.
    data = (
        b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
        b"2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
    )
    with pytest.raises(EmptyDocument, match="no pages"):
        render_pdf(data, max_pages=10)


def test_images_become_one_page_scaled_down_never_up() -> None:
    big = encode_png(Image.new("RGB", (3000, 1500), "white"))
    small = encode_png(Image.new("RGB", (300, 200), "white"))
    (page,) = render_source(big, longest_side=1288, max_pages=10)
    assert (page.width, page.height) == (1288, 644)
    (page,) = render_source(small, longest_side=1288, max_pages=10)
    assert (page.width, page.height) == (300, 200)


def test_unknown_bytes_and_corrupt_images() -> None:
    with pytest.raises(CorruptMedia, match="not a PDF or a supported image"):
        render_source(b"hello", longest_side=100, max_pages=1)
    with pytest.raises(CorruptMedia, match="cannot be decoded"):
        render_source((FIXTURES / "corrupt-image.png").read_bytes(), longest_side=100, max_pages=1)
