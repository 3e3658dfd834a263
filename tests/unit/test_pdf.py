"""PDF rendering: the bundled sample, exact sizes, page rotation, and one specific error per bad file."""

from __future__ import annotations

import io
from pathlib import Path

import pymupdf
import pytest
from PIL import Image, ImageSequence

import workers.media.pdf as pdf
from jobs.errors import (
    CorruptMedia,
    EmptyDocument,
    EncryptedDocument,
    MediaError,
    PagesOutOfRange,
    TooManyPages,
)
from jobs.samples import sample_pdf_bytes
from jobs.samples.make_sample import build as build_sample
from tests.fixtures.make_fixtures import PASSWORD, codec_files, exact_files, text_pdf
from workers.media.images import decode_image
from workers.media.pdf import iter_pdf_pages, pdf_page_count, render_pdf

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def test_sample_renders_three_pages_at_the_longest_side() -> None:
    pages = render_pdf(sample_pdf_bytes(), longest_side=1288, max_pages=10)
    assert [(p.page, p.width, p.height) for p in pages] == [(n, 911, 1288) for n in (1, 2, 3)]
    for p in pages:
        img = decode_image(p.png)
        assert (img.mode, img.size) == ("RGB", (p.width, p.height))
    assert len({p.png for p in pages}) == 3  # three different pages


@pytest.mark.parametrize("side", [1288, 1000, 448, 28])
@pytest.mark.parametrize(("width", "height"), [(595, 842), (842, 595), (612, 792), (300, 7000), (99.7, 33.3)])
def test_longest_side_is_exact_for_any_page_size(width: float, height: float, side: int) -> None:
    doc = pymupdf.open()
    doc.new_page(width=width, height=height)
    (page,) = render_pdf(doc.tobytes(), longest_side=side, max_pages=1)
    assert max(page.width, page.height) == side
    assert abs(page.width / page.height - width / height) < 2 / min(page.width, page.height) + 0.01


@pytest.mark.parametrize(("rotation", "size"), [(0, (911, 1288)), (90, (1288, 911)), (180, (911, 1288))])
def test_page_rotation_is_honoured(rotation: int, size: tuple[int, int]) -> None:
    doc = pymupdf.open(stream=sample_pdf_bytes(), filetype="pdf")
    doc[1].set_rotation(rotation)
    pages = render_pdf(doc.tobytes(), longest_side=1288, max_pages=10)
    assert (pages[1].width, pages[1].height) == size
    assert (pages[0].width, pages[0].height) == (911, 1288)  # the others keep theirs


def test_rotated_content_is_turned_not_squeezed() -> None:
    # The cover's blue band sits at the top of the page; turned 90 degrees clockwise it is on the right.
    doc = pymupdf.open(stream=sample_pdf_bytes(), filetype="pdf")
    doc[0].set_rotation(90)
    (page, *_) = render_pdf(doc.tobytes(), longest_side=200, max_pages=10)
    img = decode_image(page.png)
    assert img.getpixel((img.width - 5, img.height // 2)) != (255, 255, 255)
    assert img.getpixel((5, img.height // 2)) == (255, 255, 255)


@pytest.mark.parametrize(
    ("fixture", "error", "needle"),
    [
        ("truncated.pdf", CorruptMedia, "it is truncated"),
        ("text_named.pdf", CorruptMedia, "no %PDF- header; the file looks like plain text"),
        ("encrypted.pdf", EncryptedDocument, "encrypted and no password was given"),
        ("zero_pages.pdf", EmptyDocument, "the PDF has no pages"),
    ],
)
def test_each_bad_fixture_raises_its_own_error(fixture: str, error: type[MediaError], needle: str) -> None:
    data = (FIXTURES / fixture).read_bytes()
    for call in (lambda: render_pdf(data, max_pages=10), lambda: pdf_page_count(data)):
        with pytest.raises(error, match=needle.replace("(", r"\(")) as info:
            call()
        assert info.value.code == error.code


@pytest.mark.parametrize(
    ("cut", "needle"), [(0.25, "truncated"), (0.5, "MuPDF cannot parse it"), (0.9, "truncated")]
)
def test_cut_short_pdfs_are_corrupt_wherever_the_cut_falls(cut: float, needle: str) -> None:
    data = sample_pdf_bytes()
    with pytest.raises(CorruptMedia, match=needle):
        render_pdf(data[: int(len(data) * cut)], max_pages=10)


def test_an_empty_file_is_named_as_such() -> None:
    with pytest.raises(CorruptMedia, match="empty"):
        render_pdf(b"", max_pages=10)


def test_a_repairable_pdf_still_renders() -> None:
    # Junk before the header shifts every xref offset: MuPDF rebuilds the table and the file is whole.
    (page,) = render_pdf(b"junk\n" + text_pdf(1), longest_side=100, max_pages=1)
    assert (page.width, page.height) == (71, 100)


def test_the_right_password_unlocks_and_a_wrong_one_is_named() -> None:
    data = (FIXTURES / "encrypted.pdf").read_bytes()
    (page,) = render_pdf(data, longest_side=300, max_pages=1, password=PASSWORD)
    assert (page.width, page.height) == (212, 300)
    assert pdf_page_count(data, password=PASSWORD) == 1
    with pytest.raises(EncryptedDocument, match="the password given is wrong"):
        render_pdf(data, max_pages=1, password="guess")


def test_page_limit_is_checked_before_any_page_is_rendered(monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_render(*_: object) -> None:
        raise AssertionError("rendered a page of a PDF over the page limit")

    monkeypatch.setattr(pdf, "_render", must_not_render)
    with pytest.raises(TooManyPages, match="the PDF has 3 pages; the limit is 2"):
        render_pdf(sample_pdf_bytes(), max_pages=2)


def test_page_count() -> None:
    assert pdf_page_count(sample_pdf_bytes()) == 3
    assert pdf_page_count(text_pdf(7)) == 7


def test_committed_files_match_their_generators() -> None:
    # The generators are deterministic: regenerating changes no committed byte (codec-made images:
    # no pixel, since an encoder update may change their bytes).
    assert build_sample() == sample_pdf_bytes()
    assert len(sample_pdf_bytes()) < 30_000
    for name, data in exact_files().items():
        assert (FIXTURES / name).read_bytes() == data, name
    for name, data in codec_files().items():
        assert _pixels((FIXTURES / name).read_bytes()) == _pixels(data), name
    assert {p.name for p in FIXTURES.iterdir() if p.suffix not in (".py", "")} >= set(exact_files())
    assert all(p.stat().st_size < 200_000 for p in FIXTURES.iterdir()), "fixtures stay tiny"


def _pixels(data: bytes) -> list[bytes]:
    with Image.open(io.BytesIO(data)) as img:
        return [frame.convert("RGB").tobytes() for frame in ImageSequence.Iterator(img)]


def test_page_ranges_pick_pages_and_the_limit_counts_the_picked_ones() -> None:
    data = text_pdf(30)
    assert [p.page for p in render_pdf(data, longest_side=100, max_pages=5, pages="2-3,29-")] == [
        2,
        3,
        29,
        30,
    ]
    assert [p.text for p in render_pdf(data, longest_side=100, max_pages=5, pages="7")] == ["fixture page 7"]
    with pytest.raises(TooManyPages, match="6 of the PDF's 30 pages are selected; the limit is 5"):
        render_pdf(data, max_pages=5, pages="1-6")
    with pytest.raises(PagesOutOfRange, match="the document has 30 pages"):
        render_pdf(data, max_pages=50, pages="29-31")


def test_document_mode_takes_the_first_pages_and_flags_the_cut() -> None:
    pages = render_pdf(text_pdf(30), longest_side=100, max_pages=5, take=3)
    assert [(p.page, p.flags) for p in pages] == [(n, ("document_pages_cut",)) for n in (1, 2, 3)]
    assert all(p.flags == () for p in render_pdf(text_pdf(3), longest_side=100, max_pages=5, take=3))


def test_dpi_renders_at_physical_size_and_is_capped() -> None:
    (page,) = render_pdf(text_pdf(1), dpi=72, max_pages=1)  # A4 at 72 dpi: 595 x 842 points
    assert (page.width, page.height, page.flags) == (595, 842, ())
    (page,) = render_pdf(text_pdf(1), dpi=144, max_pages=1)
    assert (page.width, page.height) == (1190, 1684)
    (page,) = render_pdf(text_pdf(1), dpi=600, max_pages=1, max_render_side=2000)
    assert (max(page.width, page.height), page.flags) == (2000, ("scaled_to_limit",))


def test_the_text_layer_comes_with_each_page() -> None:
    assert [p.text for p in render_pdf(text_pdf(2, "memo"), longest_side=100, max_pages=5)] == [
        "memo page 1",
        "memo page 2",
    ]
    (rotated,) = render_pdf((FIXTURES / "rotated_90.pdf").read_bytes(), longest_side=100, max_pages=1)
    assert (rotated.width, rotated.height, rotated.text) == (100, 71, "rotated page 1")


@pytest.mark.parametrize(
    ("fixture", "error", "kw"),
    [
        ("truncated.pdf", CorruptMedia, {}),
        ("encrypted.pdf", EncryptedDocument, {}),
        ("zero_pages.pdf", EmptyDocument, {}),
        ("too_many_pages.pdf", TooManyPages, {"max_pages": 20}),
        ("rotated_90.pdf", PagesOutOfRange, {"pages": "2"}),
    ],
)
def test_the_iterator_checks_the_whole_file_before_it_yields(
    fixture: str, error: type[MediaError], kw: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    def must_not_render(*_: object) -> None:
        raise AssertionError("rendered a page of a file that fails its up-front checks")

    monkeypatch.setattr(pdf, "_render", must_not_render)
    with pytest.raises(error):
        iter_pdf_pages((FIXTURES / fixture).read_bytes(), **kw)  # raised by the call, not by next()


def test_the_iterator_renders_one_page_per_step() -> None:
    pages = iter_pdf_pages(text_pdf(3, "memo"), longest_side=100)
    first = next(pages)
    assert (first.page, first.text) == (1, "memo page 1")
    assert [p.page for p in pages] == [2, 3]


def test_a_page_the_tree_claims_but_lacks_fails_when_its_turn_comes() -> None:
    # missing_pages.pdf: /Count says 8, the tree holds 6. Six pages come out, then the seventh's error.
    pages = iter_pdf_pages((FIXTURES / "missing_pages.pdf").read_bytes(), longest_side=100)
    assert [next(pages).text for _ in range(6)] == [f"missing page {n}" for n in range(1, 7)]
    with pytest.raises(CorruptMedia, match="page 7 cannot be rendered") as info:
        next(pages)
    assert info.value.code == "corrupt_media"
