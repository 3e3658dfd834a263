"""iter_source: the renderer is picked from the bytes, and every fixture of the corpus gives its pages
or its own error code (the end-to-end test sends the same corpus through the API and workers)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from jobs.errors import ConverterMissing, CorruptMedia, UnsupportedMedia, VlmqError
from tests.fixtures import office
from tests.fixtures.make_fixtures import EXPECTED, OFFICE_PAGES, PAGES, card, text_pdf
from workers.media.images import encode_png
from workers.media.office import converter_path
from workers.media.page import RenderedPage, RenderOptions
from workers.media.sniff import family, sniff
from workers.prep import iter_source

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
OPTS = RenderOptions(longest_side=448, max_pages=20)
HAS_SOFFICE = converter_path("soffice") is not None


def _render(name: str, **kw: Any) -> list[RenderedPage]:
    return list(iter_source((FIXTURES / name).read_bytes(), replace(OPTS, name=name, **kw)))


@pytest.mark.parametrize(("name", "code"), sorted(EXPECTED.items()))
def test_each_bad_fixture_fails_with_its_own_code(name: str, code: str) -> None:
    with pytest.raises(VlmqError) as info:
        _render(name)
    assert info.value.code == code


@pytest.mark.parametrize(("name", "pages"), sorted(PAGES.items()))
def test_each_odd_but_good_fixture_renders(name: str, pages: int) -> None:
    assert len(_render(name)) == pages


@pytest.mark.skipif(not HAS_SOFFICE, reason="LibreOffice (soffice) is not installed on this machine")
@pytest.mark.parametrize(("name", "pages"), sorted(OFFICE_PAGES.items()))
def test_office_fixtures_convert_with_libreoffice(name: str, pages: int) -> None:
    assert len(_render(name)) == pages


@pytest.mark.parametrize("name", sorted(OFFICE_PAGES))
def test_office_files_without_a_converter_name_it(name: str) -> None:
    with pytest.raises(ConverterMissing, match="'no-such-soffice' is not installed on this worker"):
        _render(name, soffice="no-such-soffice")


@pytest.mark.parametrize(
    ("data", "fmt"),
    [
        (text_pdf(1), "pdf"),
        (b"junk before the header %PDF-1.4 ...", "pdf"),
        (encode_png(card("red", "x")), "png"),
        (b"RIFF\x10\x00\x00\x00WEBPVP8 ", "webp"),
        (b"RIFF\x10\x00\x00\x00AVI LIST", None),  # RIFF but a video: not ours
        (office.docx(["a"]), "docx"),
        (office.pptx(["a"]), "pptx"),
        (office.odp(["a"]), "odp"),
        (office.xlsx(), "xlsx"),
        (
            b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 64 + "PowerPoint Document".encode("utf-16-le"),
            "ppt",
        ),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 64 + "WordDocument".encode("utf-16-le"), "doc"),
        (b"PK\x03\x04 cut short", None),
        (b"hello", None),
    ],
)
def test_formats_are_told_by_content(data: bytes, fmt: str | None) -> None:
    assert sniff(data) == fmt


def test_names_only_word_the_error_and_never_choose_the_renderer() -> None:
    png = encode_png(card("red", "x"))
    assert family(png, "photo.pdf") == ("image", "png")  # a PNG named .pdf is still a PNG
    with pytest.raises(CorruptMedia, match=r"named \.jpeg but is not a readable JPEG"):
        family(b"hello", "photo.JPG")
    with pytest.raises(UnsupportedMedia, match="not a PDF, an image"):
        family(b"hello", "notes")
    with pytest.raises(CorruptMedia, match="empty"):
        family(b"", "x.pdf")
