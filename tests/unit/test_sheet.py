"""A video clip drawn for people (workers.media.sheet): bounded whatever the clip, frames spread from the
first to the last, a padding repeat shown once, times as a player shows them."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from jobs.errors import CorruptMedia
from workers.media import clip, sheet


def packed(count: int, size: tuple[int, int] = (56, 28), fps: float = 2.0, pad: bool = False) -> bytes:
    """A stored clip of ``count`` frames (source frame i each), the last repeated once when ``pad``."""
    w, h = size
    frames = [np.full((h, w, 3), i % 256, np.uint8) for i in range(count)]
    indices = list(range(count))
    if pad:
        frames, indices = [*frames, frames[-1]], [*indices, indices[-1]]
    return clip.pack(
        clip.VideoClip(np.stack(frames), fps, tuple(indices), total_num_frames=count, duration=count / fps)
    )


def test_a_long_clip_shows_16_frames_from_first_to_last() -> None:
    frames = clip.preview_frames(packed(600), sheet.MAX_FRAMES, sheet.TILE)
    times = [t for t, _ in frames]
    assert len(times) == 16 and times[0] == 0 and times[-1] == 599 / 2
    assert times == sorted(times)
    png = Image.open(io.BytesIO(sheet.contact_sheet(packed(600))))
    assert png.size == (4 * (56 + sheet.GAP) - sheet.GAP, 4 * (28 + sheet.LABEL + sheet.GAP) - sheet.GAP)


def test_the_padding_repeat_is_shown_once() -> None:
    frames = clip.preview_frames(packed(3, pad=True), sheet.MAX_FRAMES, sheet.TILE)
    assert [t for t, _ in frames] == [0, 0.5, 1]


def test_large_frames_are_scaled_to_the_tile() -> None:
    ((_, frame), _) = clip.preview_frames(packed(2, size=(1288, 728)), sheet.MAX_FRAMES, sheet.TILE)
    assert frame.size == (256, 145)
    png = Image.open(io.BytesIO(sheet.contact_sheet(packed(2, size=(1288, 728)))))
    assert png.size == (2 * 256 + sheet.GAP, 145 + sheet.LABEL)
    assert max(png.size) <= 4 * (sheet.TILE + sheet.GAP)  # the sheet's bound, whatever the clip


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0, "0:00.0"), (2.5, "0:02.5"), (62.3, "1:02.3"), (59.96, "1:00.0"), (3600, "60:00.0")],
)
def test_times_read_as_a_player_shows_them(seconds: float, shown: str) -> None:
    assert sheet.clock(seconds) == shown


def test_a_broken_clip_is_corrupt_media() -> None:
    with pytest.raises(CorruptMedia, match="stored video clip cannot be read"):
        sheet.contact_sheet(b"PK\x03\x04 not really a zip")
