"""Image decode/encode: RGB out, transparency on white, bad bytes named."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from jobs.errors import CorruptMedia, ExtremeAspectRatio, ImageTooLarge, PagesOutOfRange, TooManyPages
from tests.fixtures.make_fixtures import card, pixel_bomb_png
from workers.media.images import decode_image, encode_png, image_pages


def _bytes(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("mode", "fmt"), [("RGB", "JPEG"), ("L", "PNG"), ("P", "GIF"), ("CMYK", "TIFF"), ("RGBA", "WEBP")]
)
def test_any_mode_comes_back_rgb(mode: str, fmt: str) -> None:
    img = decode_image(_bytes(Image.new(mode, (30, 20)), fmt))
    assert (img.mode, img.size) == ("RGB", (30, 20))


def test_transparency_is_flattened_on_white() -> None:
    clear = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    clear.putpixel((0, 0), (255, 0, 0, 255))
    img = decode_image(encode_png(clear))
    assert img.getpixel((0, 0)) == (255, 0, 0) and img.getpixel((3, 3)) == (255, 255, 255)


def test_png_round_trip_is_lossless() -> None:
    img = Image.effect_noise((64, 48), 40).convert("RGB")
    assert decode_image(encode_png(img)).tobytes() == img.tobytes()


def test_truncated_and_unknown_bytes_are_corrupt() -> None:
    png = encode_png(Image.effect_noise((64, 64), 40).convert("RGB"))
    for data in (png[: len(png) // 2], b"GIF89a nonsense", b""):
        with pytest.raises(CorruptMedia, match="image cannot be decoded"):
            decode_image(data)


def test_more_pixels_than_the_limit_is_refused_from_the_header() -> None:
    with pytest.raises(ImageTooLarge, match="300 x 300 = 90000 pixels; the limit is 100") as info:
        decode_image(encode_png(Image.new("RGB", (300, 300))), max_pixels=100)
    assert info.value.code == "image_too_large"
    # 1.6 G pixels claimed by a 69-byte file: refused without allocating a single row.
    with pytest.raises(ImageTooLarge, match="40000 x 40000"):
        image_pages(pixel_bomb_png())


def test_large_images_are_scaled_down_and_flagged_never_up() -> None:
    (big,) = image_pages(encode_png(Image.new("RGB", (3000, 1500), "white")), longest_side=1288)
    (small,) = image_pages(encode_png(Image.new("RGB", (300, 200), "white")), longest_side=1288)
    assert (big.width, big.height, big.flags) == (1288, 644, ("image_downscaled",))
    assert (small.width, small.height, small.flags) == (300, 200, ())
    assert decode_image(big.png).size == (1288, 644)


def test_a_large_jpeg_is_decoded_at_a_reduced_scale_and_still_exact() -> None:
    photo = Image.effect_noise((4000, 3000), 60).convert("RGB")
    (page,) = image_pages(_bytes(photo, "JPEG"), longest_side=500)
    assert (page.width, page.height) == (500, 375)


def test_every_tiff_page_is_a_page_and_ranges_apply() -> None:
    tiff = _tiff([card(c, str(i)) for i, c in enumerate(("red", "green", "blue"))])
    pages = image_pages(tiff)
    assert [p.page for p in pages] == [1, 2, 3]
    reds = [decode_image(p.png).getpixel((20, 20)) for p in pages]
    assert reds[0][0] > 200 and reds[1][1] > 100 and reds[2][2] > 200  # each page is its own frame
    assert [p.page for p in image_pages(tiff, pages="2-")] == [2, 3]
    with pytest.raises(PagesOutOfRange, match="has 3 pages"):
        image_pages(tiff, pages="4")
    with pytest.raises(TooManyPages, match="the TIFF has 3 pages; the limit is 2"):
        image_pages(tiff, max_pages=2)


def test_an_animated_gif_gives_its_first_frame_and_says_so() -> None:
    frames = [card(c, "f") for c in ("orange", "purple")]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    (page,) = image_pages(buf.getvalue())
    assert page.flags == ("first_frame_only",)
    r, _, b = decode_image(page.png).getpixel((20, 20))
    assert r > 200 and b < 100  # orange, not purple


def test_exif_orientation_turns_photos_upright() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to view"
    img = Image.new("RGB", (64, 32), "white")
    img.paste((0, 0, 255), (0, 0, 8, 32))  # a blue band on the left of the stored image
    (page,) = image_pages(_bytes_with(img, "PNG", exif=exif.tobytes()))
    upright = decode_image(page.png)
    assert upright.size == (32, 64)
    assert upright.getpixel((16, 2))[2] > 200  # turned clockwise: the left band is now on top


def test_an_image_longer_than_the_model_takes_is_named() -> None:
    with pytest.raises(ExtremeAspectRatio, match="4000 x 10"):
        image_pages(encode_png(Image.new("L", (4000, 10))))


def _tiff(frames: list[Image.Image]) -> bytes:
    buf = io.BytesIO()
    frames[0].save(buf, format="TIFF", save_all=True, append_images=frames[1:], compression="tiff_lzw")
    return buf.getvalue()


def _bytes_with(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()
