"""Video sampling in a child process (workers.media.isolated): the same clip as in-process, each bad
file's own error carried back, and a decoder that crashes or hangs failing only its item."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from jobs.errors import CorruptVideo, VideoDecodeTimeout, VlmqError
from tests.fixtures.videos import BAD, GOOD, TOO_LARGE_LIMIT
from workers.media import clip
from workers.media.isolated import sample_packed
from workers.media.video import Sampling, sample_video

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SAMPLING = Sampling(max_bytes=TOO_LARGE_LIMIT, max_seconds=3600)


def test_the_child_samples_the_same_clip() -> None:
    data = (FIXTURES / GOOD).read_bytes()
    theirs = clip.unpack(sample_packed(data, SAMPLING, GOOD, timeout_s=120))
    ours = clip.unpack(clip.pack(sample_video(data, SAMPLING, GOOD)))  # as prep stores it in-process
    assert theirs.frames.shape == ours.frames.shape and np.array_equal(theirs.frames, ours.frames)
    assert theirs.metadata() == ours.metadata()


@pytest.mark.parametrize(("name", "code"), sorted(BAD.items()))
def test_each_bad_file_keeps_its_own_error_through_the_child(name: str, code: str) -> None:
    with pytest.raises(VlmqError) as info:
        sample_packed((FIXTURES / name).read_bytes(), SAMPLING, name, timeout_s=120)
    assert info.value.code == code
    assert name in str(info.value) or code != "corrupt_video"  # the message still names the file


def _child(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_decoder_crash_fails_the_item_and_names_the_signal() -> None:
    crash = _child("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    with pytest.raises(CorruptVideo, match=r"the video decoder crashed on clip.mp4 \(SIGSEGV\)"):
        sample_packed(b"\x00" * 64, SAMPLING, "clip.mp4", timeout_s=60, command=crash)


def test_a_hanging_decoder_is_stopped_at_the_time_limit() -> None:
    with pytest.raises(VideoDecodeTimeout, match=r"decoding clip.mp4 took over 1 s") as info:
        sample_packed(
            b"\x00" * 64, SAMPLING, "clip.mp4", timeout_s=1, command=_child("import time; time.sleep(60)")
        )
    assert info.value.code == "video_decode_timeout"


def test_a_broken_child_is_an_unknown_error_to_retry_not_a_bad_file() -> None:
    broken = _child("import sys; print('boom', file=sys.stderr); sys.exit(7)")
    with pytest.raises(RuntimeError, match="exited with status 7: boom"):
        sample_packed(b"", SAMPLING, "clip.mp4", 60, command=broken)
