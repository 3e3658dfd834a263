"""Video sampling as GLM-4.1V does it, frame sizes, containers, and one specific error per bad file."""

from __future__ import annotations

import io
import re
import zipfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from jobs.errors import CorruptMedia, VlmqError
from tests.fixtures.videos import BAD, GOOD, TOO_LARGE_LIMIT, build_videos, moving_square
from workers.media import clip
from workers.media.video import (
    PIXELS_PER_TOKEN,
    Sampling,
    frame_size,
    is_video,
    named_video,
    sample_indices,
    sample_video,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
DEFAULT = Sampling()


def test_two_frames_a_second_and_pairs_padded_with_the_last() -> None:
    # 3.5 s at 10 fps: 7 frames at 0, 0.5, ... 3.0 s, then frame 30 again to make a pair.
    assert sample_indices(35, 10.0, target_fps=2, sample_seconds=300, max_frames=600) == [
        0, 5, 10, 15, 20, 25, 30, 30,
    ]  # fmt: skip


def test_frame_budget_spreads_frames_over_the_whole_video() -> None:
    ours = sample_indices(3000, 10.0, target_fps=2, sample_seconds=300, max_frames=20)  # 300 s
    assert len(ours) == 20 and ours[0] == 0 and ours[-1] == 2999
    steps = np.diff(ours)
    assert steps.min() >= 150 and steps.max() <= 160  # even spacing, about 15.8 s apart


@pytest.mark.parametrize(
    ("h", "w", "t"), [(720, 1280, 600), (1080, 1920, 20), (120, 160, 6), (2160, 3840, 2)]
)
def test_frame_size_fits_the_budget(h: int, w: int, t: int) -> None:
    fh, fw = frame_size(h, w, t, max_tokens=6144, longest_side=1288)
    assert fh % 28 == 0 and fw % 28 == 0 and max(fh, fw) <= 1288 + 14
    assert t * fh * fw <= 6144 * PIXELS_PER_TOKEN or (fh, fw) == (28, 28)
    assert abs(fw / fh - w / h) < 0.25 * w / h  # the shape survives the rounding to 28s
    # The sizes are a fixed point: GLM's processor keeps them (tests/integration/test_video_engine.py).
    assert frame_size(fh, fw, t, max_tokens=6144, longest_side=1288) == (fh, fw)


def test_signatures() -> None:
    data = build_videos()
    assert is_video(data[GOOD]) and is_video(data["unsupported-codec.mp4"])
    assert is_video(b"\x1a\x45\xdf\xa3" + bytes(20))  # Matroska / WebM
    assert is_video(b"RIFF\x00\x00\x00\x00AVI LIST")
    assert is_video(b"\x00\x00\x00\x08wide\x00\x00\x00\x00mdat")  # old QuickTime
    assert not is_video(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00")  # a HEIC photo
    assert not is_video(b"RIFF\x00\x00\x00\x00WEBPVP8 ")
    assert not is_video(b"%PDF-1.7") and not is_video(b"")
    assert named_video("s3://b/uploads/t/abc/Holiday.MOV") and not named_video("s3://b/x.pdf")


def test_good_clip_is_sampled_sized_and_timestamped() -> None:
    got = sample_video((FIXTURES / GOOD).read_bytes(), DEFAULT, GOOD)
    assert got.frames.shape == (6, 112, 168, 3)  # 160 x 120 rounded to 28s; 3 s at 2 fps
    assert got.frames_indices == (0, 5, 10, 15, 20, 25)
    assert (got.fps, got.total_num_frames, got.duration) == (10.0, 30, 3.0)
    assert got.timestamps == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    # The square moves right: its centre column grows frame by frame.
    centres = [np.argwhere(f[56, :, 0] > 200).mean() for f in got.frames]
    assert centres == sorted(centres) and centres[-1] - centres[0] > 80


@pytest.mark.parametrize(("name", "code"), sorted(BAD.items()))
def test_each_bad_file_fails_with_its_code(name: str, code: str) -> None:
    limited = Sampling(max_bytes=TOO_LARGE_LIMIT)
    with pytest.raises(VlmqError) as err:
        sample_video((FIXTURES / name).read_bytes(), limited, name)
    assert err.value.code == code
    assert name in err.value.message


@pytest.mark.parametrize(
    ("fmt", "codec", "pix_fmt"),
    [("webm", "libvpx-vp9", "yuv420p"), ("matroska", "libx264", "yuv420p"), ("avi", "mjpeg", "yuvj420p"),
     ("mov", "libx264", "yuv420p"), ("mp4", "libsvtav1", "yuv420p")],
)  # fmt: skip
def test_containers_and_codecs(fmt: str, codec: str, pix_fmt: str, tmp_path: Path) -> None:
    import av

    path = tmp_path / f"v.{fmt}"
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=Fraction(4))
        stream.width, stream.height, stream.pix_fmt = 64, 64, pix_fmt
        for i in range(8):
            picture = np.full((64, 64, 3), 30 * i, np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")))
        out.mux(stream.encode())
    got = sample_video(path.read_bytes(), DEFAULT, path.name)
    assert got.frames_indices == (0, 2, 4, 6) and got.duration == 2.0
    assert np.diff(got.frames[:, 30, 30].mean(axis=1)).min() > 40  # later frames are lighter


def test_long_video_spread_to_the_budget() -> None:
    data = moving_square(frames=40, rate=Fraction(1, 10), size=(64, 48))  # 400 s, one frame per 10 s
    got = sample_video(data, Sampling(max_frames=10), "long.mp4")
    assert len(got.frames_indices) == 10 and got.frames_indices[-1] == 39
    assert got.timestamps[-1] == 390.0


def test_clip_round_trip_through_its_stored_form() -> None:
    got = sample_video((FIXTURES / GOOD).read_bytes(), DEFAULT, GOOD)
    data = clip.pack(got)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert z.namelist()[:2] == ["clip.json", "frames/00000.jpg"] and len(z.namelist()) == 7
    back = clip.unpack(data)
    assert back.metadata() == got.metadata()
    assert back.frames.shape == got.frames.shape
    assert np.abs(back.frames.astype(int) - got.frames).mean() < 2  # JPEG at quality 95
    key = clip.clip_key("ab" * 32, DEFAULT.variant)
    assert key == f"media/{'ab' * 32}/video-2fps-300s-600f-6144t-1288px/clip.zip" and clip.is_clip_key(key)


@pytest.mark.parametrize("data", [b"", b"PK\x03\x04 not a zip", b"%PDF-1.7"])
def test_unreadable_stored_clip_is_corrupt_media(data: bytes) -> None:
    with pytest.raises(CorruptMedia, match="stored video clip cannot be read"):
        clip.unpack(data)


def test_clip_refuses_an_odd_frame_count() -> None:
    with pytest.raises(ValueError, match="even"):
        clip.VideoClip(np.zeros((3, 28, 28, 3), np.uint8), 2.0, (0, 1, 2), 3, 1.5)


def _untagged(data: bytes) -> bytes:
    """The bytes without libav's version tags ("Lavf62.12.102", "Lavc62.28.102"), which depend on which
    FFmpeg the process loaded first (decord2 bundles its own), not on the video."""
    return re.sub(rb"Lav[fc]\d+\.\d+\.\d+", b"Lav", data)


def test_committed_videos_match_their_generator() -> None:
    for name, data in build_videos().items():
        assert _untagged((FIXTURES / name).read_bytes()) == _untagged(data), name
        assert len(data) < 200_000, name
    assert set(build_videos()) == {GOOD, *BAD}
