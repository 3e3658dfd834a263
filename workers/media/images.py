"""Image bytes in and out. PNG is the model-ready format stored in S3 (lossless, every engine reads it).

Inputs: PNG, JPEG, WebP, TIFF (every page of a multi-page TIFF), GIF (first frame; so are animated
WebP and PNG). Images larger than the render size are scaled down (flag ``image_downscaled``), never
refused for their size alone; only more pixels than ``max_pixels`` (a decompression bomb or an absurd
scan) is refused, from the header, before any pixel is decoded.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from jobs.errors import CorruptMedia, ExtremeAspectRatio, ImageTooLarge
from workers.media.page import RenderedPage, RenderOptions, choose_pages

# Our own pixel check (a setting) replaces Pillow's process-wide one, which would only warn or raise
# at a fixed size; every decode here goes through _open.
Image.MAX_IMAGE_PIXELS = None
DEFAULT_MAX_PIXELS = RenderOptions().max_pixels
MAX_ASPECT = 200  # GLM-4.1V's image processor refuses images more elongated than this
WHITE = (255, 255, 255)
_ORIENTATION = 0x0112  # the EXIF tag
_DECODE_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError)


def encode_png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    # compress_level 1: pages are re-read once by the GPU worker; speed beats a few percent of size.
    img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


# A PNG's signature and IHDR chunk up to its width and height: what png_size reads.
PNG_HEADER = 24
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(header: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's first PNG_HEADER bytes, without its pixels; else CorruptMedia."""
    if len(header) < PNG_HEADER or header[:8] != _PNG_SIGNATURE or header[12:16] != b"IHDR":
        raise CorruptMedia("image cannot be decoded: not a PNG header")
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """RGB image from bytes (first frame; transparency on white); unreadable -> CorruptMedia naming why."""
    with _open(data, max_pixels) as img:
        return _decoded(lambda: _to_rgb(img))


def image_pages(data: bytes, opts: RenderOptions | None = None, **kw: Any) -> list[RenderedPage]:
    """An image's pages (a TIFF's selected pages, else the first frame), scaled to the longest side."""
    opts = replace(opts or RenderOptions(), **kw)
    with _open(data, opts.max_pixels) as img:
        frames = getattr(img, "n_frames", 1)
        if img.format == "TIFF":
            numbers, flags = choose_pages(opts, frames, "TIFF")
        else:
            numbers, flags = [1], (("first_frame_only",) if frames > 1 else ())
        return [_decoded(lambda: _page(img, n, opts, flags)) for n in numbers]  # noqa: B023 (called at once)


@contextmanager
def _open(data: bytes, max_pixels: int) -> Iterator[Image.Image]:
    try:
        img = Image.open(io.BytesIO(data))  # reads the header only
    except UnidentifiedImageError as e:
        raise CorruptMedia("image cannot be decoded: its header is damaged or of no known format") from e
    except _DECODE_ERRORS as e:
        raise CorruptMedia(f"image cannot be decoded: {e}") from e
    with img:
        _check_pixels(img, max_pixels)
        yield img


def _decoded(make: Any) -> Any:
    try:
        return make()
    except _DECODE_ERRORS as e:
        raise CorruptMedia(f"image cannot be decoded: {e}") from e


def _check_pixels(img: Image.Image, max_pixels: int) -> None:
    w, h = img.size
    if w * h > max_pixels:
        raise ImageTooLarge(f"image is {w} x {h} = {w * h} pixels; the limit is {max_pixels}")


def _page(img: Image.Image, number: int, opts: RenderOptions, flags: tuple[str, ...]) -> RenderedPage:
    img.seek(number - 1)
    _check_pixels(img, opts.max_pixels)  # each TIFF page has its own size
    w, h = img.size
    if max(w, h) / max(1, min(w, h)) > MAX_ASPECT:
        raise ExtremeAspectRatio(f"page {number} is {w} x {h}; the model takes at most {MAX_ASPECT}:1")
    scale = opts.longest_side / max(w, h)
    if scale < 1:  # never upscale: it adds vision tokens and no information
        flags = (*flags, "image_downscaled")
        # JPEG decodes straight at 1/2, 1/4 or 1/8 scale: a 24 MP photo costs a fraction to read.
        img.draft("RGB", (math.ceil(w * scale), math.ceil(h * scale)))
    rgb = _to_rgb(_upright(img))
    if scale < 1:
        size = _fit(rgb.size, opts.longest_side)
        rgb = rgb.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
    return RenderedPage(page=number, png=encode_png(rgb), width=rgb.width, height=rgb.height, flags=flags)


def _upright(img: Image.Image) -> Image.Image:
    """Camera photos turned the way they were taken (EXIF orientation); the rest as they are."""
    if img.getexif().get(_ORIENTATION, 1) == 1:
        return img
    return ImageOps.exif_transpose(img) or img


def _fit(size: tuple[int, int], longest_side: int) -> tuple[int, int]:
    scale = longest_side / max(size)
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        # Transparent pixels often hold black: flattened as-is a dark logo on a clear background vanishes.
        rgba = img.convert("RGBA")
        flat = Image.new("RGB", rgba.size, WHITE)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return img.convert("RGB")
