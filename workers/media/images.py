"""Image bytes in and out. PNG is the model-ready format stored in S3 (lossless, every engine reads it)."""

from __future__ import annotations

import io

from PIL import Image, UnidentifiedImageError

from jobs.errors import CorruptMedia

# A decompression bomb is refused by Pillow above this many pixels; 16k x 16k covers large scans.
Image.MAX_IMAGE_PIXELS = 16384 * 16384


def encode_png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    # compress_level 1: pages are re-read once by the GPU worker; speed beats a few percent of size.
    img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def decode_image(data: bytes) -> Image.Image:
    """RGB image from bytes; anything unreadable is CorruptMedia naming why."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.seek(0)  # first frame of a GIF or a multi-page TIFF
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise CorruptMedia(f"image cannot be decoded: {e}") from e
