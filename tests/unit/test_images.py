"""Image decode/encode: RGB out, transparency on white, bad bytes named."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from jobs.errors import CorruptMedia, SourceTooLarge
from workers.media.images import decode_image, encode_png


def _bytes(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize(("mode", "fmt"), [("RGB", "JPEG"), ("L", "PNG"), ("P", "GIF"), ("CMYK", "TIFF")])
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


def test_a_decompression_bomb_is_too_large(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(SourceTooLarge, match="too many pixels"):
        decode_image(encode_png(Image.new("RGB", (300, 300))))
