"""A stored video clip as one PNG for people: a contact sheet of its frames, each with its time.

The results page shows a unit's media as an image; a video's media is its clip (``workers.media.clip``:
a zip of JPEG frames), which no browser can show. The sheet is bounded whatever the clip: at most
``MAX_FRAMES`` frames spread over it, each at most ``TILE`` px, so at most 1036 x 1116 px, and only
the frames shown are decoded.
"""

from __future__ import annotations

import functools
import io
import math

from PIL import Image, ImageDraw, ImageFont

from workers.media import clip

MAX_FRAMES = 16  # 4 rows of 4: enough to follow what happens, few enough to draw on a page view
COLUMNS = 4
TILE = 256  # a frame's longest side on the sheet
LABEL = 20  # the strip under each frame that holds its time
GAP = 4  # between frames, so that two frames of one scene do not read as one picture
BACKGROUND = (32, 32, 32)


def contact_sheet(data: bytes) -> bytes:
    """The PNG of a clip ``clip.pack`` wrote; an unreadable clip -> CorruptMedia."""
    frames = clip.preview_frames(data, MAX_FRAMES, TILE)
    width, height = max(f.width for _, f in frames), max(f.height for _, f in frames)
    columns = min(COLUMNS, len(frames))
    rows = math.ceil(len(frames) / columns)
    size = (columns * (width + GAP) - GAP, rows * (height + LABEL + GAP) - GAP)
    sheet = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for n, (seconds, frame) in enumerate(frames):
        x, y = (n % columns) * (width + GAP), (n // columns) * (height + LABEL + GAP)
        sheet.paste(frame, (x, y))
        draw.text((x + 4, y + height + 3), clock(seconds), fill="white", font=_font())
    out = io.BytesIO()
    sheet.save(out, format="PNG")
    return out.getvalue()


def clock(seconds: float) -> str:
    """A frame's time as m:ss.s (what a video player shows), to the tenth of a second."""
    minutes, rest = divmod(round(seconds, 1), 60)
    return f"{int(minutes)}:{rest:04.1f}"


@functools.cache
def _font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=14)  # Pillow's own font: nothing to install
