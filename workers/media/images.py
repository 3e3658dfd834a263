"""Image bytes in and out. PNG is the model-ready format stored in S3 (lossless, every engine reads it)."""

from __future__ import annotations

import io

from PIL import Image, UnidentifiedImageError

from jobs.errors import CorruptMedia, SourceTooLarge

# A decompression bomb is refused by Pillow above this many pixels; 16k x 16k covers large scans.
Image.MAX_IMAGE_PIXELS = 16384 * 16384
WHITE = (255, 255, 255)


def encode_png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    # compress_level 1: pages are re-read once by the GPU worker; speed beats a few percent of size.
    img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def decode_image(data: bytes) -> Image.Image:
    """RGB image from bytes (first frame; transparency on white); unreadable -> CorruptMedia naming why."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.seek(0)  # first frame of a GIF or a multi-page TIFF
            return _to_rgb(img)
    except Image.DecompressionBombError as e:
        raise SourceTooLarge(f"image has too many pixels: {e}") from e
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise CorruptMedia(f"image cannot be decoded: {e}") from e


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        # Transparent pixels often hold black: flattened as-is a dark logo on a clear background vanishes.
        rgba = img.convert("RGBA")
        flat = Image.new("RGB", rgba.size, WHITE)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return img.convert("RGB")
