"""Video sources: recognise them, and sample them into a model-ready ``VideoClip`` the way GLM-4.1V does.

Sampling is the one in transformers' ``Glm4vVideoProcessor.sample_frames`` (the model's own), with its
constants as settings: ``fps`` frames a second (2) while the video lasts at most ``sample_seconds``
(300); a longer one gets ``fps * sample_seconds`` frames spread evenly over its whole length; never
more than ``max_frames``; repeated indices dropped, and the last frame repeated once when the count
is odd, because the vision tower takes frames in pairs. Frame i's time is ``index / source fps``.

Frames are decoded straight to the size the processor would resize them to (``frame_size``), so the
stored clip is exactly what the model sees and the processor's own resize is a no-op.

Decoder: ``decord2``, the maintained fork of decord (same ``import decord`` API). decord 0.6.0 (2021)
installs and works here, but its bundled FFmpeg 4 has no AV1 decoder, and AV1 is what phones and
video sites produce now; decord2 bundles FFmpeg 8 with dav1d.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from jobs.config import LimitSettings
from jobs.errors import (
    CorruptVideo,
    EmptyVideo,
    NoVideoStream,
    UnsupportedCodec,
    UnsupportedMedia,
    VideoTooLarge,
    VideoTooLong,
    VlmqError,
)
from workers.media.clip import VideoClip

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi")
# ISO base media (MP4, MOV, M4V, 3GP): a box type at offset 4; old QuickTime files open with another atom.
_ISO_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot")
# ftyp brands of still images (HEIF, AVIF) that share the MP4 box layout.
_IMAGE_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis")
_EBML = b"\x1a\x45\xdf\xa3"  # Matroska, WebM
# FFmpeg error codes that decord puts in its messages (AVERROR_DECODER_NOT_FOUND, ..._STREAM_NOT_FOUND).
_NO_DECODER, _NO_STREAM = "-1128613112", "-1381258232"
_DECORD_PREFIX = re.compile(r"\[[\d:]+\] \S+:\d+: ")
FACTOR = 28  # the vision tower's patch (14) times its spatial merge (2): frame sides are multiples
MIN_PIXELS = 112 * 112  # over all frames together, as the processor's smart_resize counts
PIXELS_PER_TOKEN = 2 * FACTOR * FACTOR  # one token covers a 28 x 28 square of a pair of frames
MAX_ASPECT = 200  # the processor refuses more elongated frames


@dataclass(frozen=True)
class Sampling:
    fps: float = 2.0
    sample_seconds: float = 300.0
    max_frames: int = 600
    max_seconds: float = 3600.0
    max_bytes: int = 200 * 1024 * 1024
    max_tokens: int = 6144
    longest_side: int = 1288

    @classmethod
    def from_limits(cls, limits: LimitSettings) -> Sampling:
        return cls(
            fps=limits.video_fps,
            sample_seconds=limits.video_sample_seconds,
            max_frames=limits.video_max_frames,
            max_seconds=limits.max_video_seconds,
            max_bytes=limits.max_video_bytes,
            max_tokens=limits.video_max_tokens,
            longest_side=limits.video_longest_side,
        )

    @property
    def variant(self) -> str:
        """What shapes the clip, for its content-addressed key (the refusal limits do not)."""
        return (
            f"{self.fps:g}fps-{self.sample_seconds:g}s-{self.max_frames}f-"
            f"{self.max_tokens}t-{self.longest_side}px"
        )


def is_video(data: bytes) -> bool:
    """True for an MP4/MOV/M4V, Matroska/WebM or AVI container signature."""
    if data.startswith(_EBML) or (data.startswith(b"RIFF") and data[8:12] == b"AVI "):
        return True
    if data[4:8] == b"ftyp":
        return data[8:12] not in _IMAGE_BRANDS
    return data[4:8] in _ISO_BOXES


def named_video(uri: str) -> bool:
    return uri.lower().endswith(VIDEO_EXTENSIONS)


def sample_indices(
    total: int, fps: float, *, target_fps: float, sample_seconds: float, max_frames: int
) -> list[int]:
    """Source frame indices to keep: GLM-4.1V's rule (see the module docstring), padded to pairs."""
    last, duration = total - 1, total / fps
    if duration <= sample_seconds:
        n = max(1, math.floor(duration * target_fps))
        if n <= max_frames:  # the same float expression as the processor's, so the same indices
            return _pairs([min(last, math.ceil(i * fps / target_fps)) for i in range(n)])
    else:
        n = int(sample_seconds * target_fps)
    n = min(n, max_frames)
    if n >= total:
        return _pairs(list(range(total)))
    return _pairs([min(last, math.ceil(t * fps)) for t in np.linspace(0, duration, n, endpoint=True)])


def _pairs(indices: list[int]) -> list[int]:
    uniq = list(dict.fromkeys(indices))
    return uniq + uniq[-1:] if len(uniq) % 2 else uniq


def frame_size(
    height: int, width: int, frames: int, *, max_tokens: int, longest_side: int
) -> tuple[int, int]:
    """(height, width) for every frame: the processor's smart_resize with ``max_tokens`` as its pixel
    budget, after capping the longest side. Sides come out as multiples of 28."""
    scale = min(1.0, longest_side / max(height, width))
    h, w = height * scale, width * scale
    h_bar, w_bar = max(FACTOR, round(h / FACTOR) * FACTOR), max(FACTOR, round(w / FACTOR) * FACTOR)
    budget = max_tokens * PIXELS_PER_TOKEN
    if frames * h_bar * w_bar > budget:
        beta = math.sqrt(frames * h * w / budget)
        h_bar = max(FACTOR, math.floor(h / beta / FACTOR) * FACTOR)
        w_bar = max(FACTOR, math.floor(w / beta / FACTOR) * FACTOR)
    elif frames * h_bar * w_bar < MIN_PIXELS:
        beta = math.sqrt(MIN_PIXELS / (frames * h * w))
        h_bar, w_bar = math.ceil(h * beta / FACTOR) * FACTOR, math.ceil(w * beta / FACTOR) * FACTOR
    return h_bar, w_bar


def sample_video(data: bytes, sampling: Sampling, name: str = "the file") -> VideoClip:
    """Decode the frames GLM-4.1V takes from a video file. Bad input raises a MediaError naming why."""
    _check_file(data, sampling, name)
    total, fps, height, width = _probe(data, name)
    duration = total / fps
    if duration > sampling.max_seconds:
        raise VideoTooLong(f"{name} lasts {duration:.0f} s; the limit is {sampling.max_seconds:g} s")
    if max(height, width) > MAX_ASPECT * min(height, width):
        raise UnsupportedMedia(f"{name}: frames of {width} x {height} are too elongated for the model")
    indices = sample_indices(
        total, fps, target_fps=sampling.fps, sample_seconds=sampling.sample_seconds,
        max_frames=sampling.max_frames,
    )  # fmt: skip
    h, w = frame_size(
        height, width, len(indices), max_tokens=sampling.max_tokens, longest_side=sampling.longest_side
    )
    frames = _frames(data, name, indices, (h, w))
    return VideoClip(frames, fps, tuple(indices), total, duration)


def _probe(data: bytes, name: str) -> tuple[int, float, int, int]:
    """(frames, fps, height, width). The reader is dropped on return: decord's decoding thread runs
    ahead of what was asked, and a live reader would decode the whole video once more meanwhile."""
    reader = _open(data, name)
    total, fps = len(reader), float(reader.get_avg_fps())
    if total == 0:
        raise EmptyVideo(f"{name} holds a video stream with no frames")
    if not fps > 0:  # also NaN
        raise CorruptVideo(f"{name} has no usable frame rate ({fps})")
    height, width = _decode(reader, [0], name).shape[1:3]
    return total, fps, int(height), int(width)


def _check_file(data: bytes, sampling: Sampling, name: str) -> None:
    if not data:
        raise EmptyVideo(f"{name} is empty (0 bytes)")
    if len(data) > sampling.max_bytes:
        raise VideoTooLarge(f"{name} is {len(data)} bytes; the video limit is {sampling.max_bytes}")
    if not is_video(data):
        raise CorruptVideo(f"{name} is named as a video but has no MP4, MOV, WebM, MKV or AVI signature")


def _open(data: bytes, name: str, size: tuple[int, int] = (-1, -1)) -> Any:
    import decord

    try:
        # One decoding thread: prep scales by worker processes, one core each.
        return decord.VideoReader(
            io.BytesIO(data), ctx=decord.cpu(0), num_threads=1, height=size[0], width=size[1]
        )
    except Exception as e:  # decord raises RuntimeError or its own DECORDError, told apart by message
        raise _reason(e, name, "the container cannot be read (truncated, or not a video)") from e


def _frames(data: bytes, name: str, indices: list[int], size: tuple[int, int]) -> np.ndarray:
    """Decode the kept frames in one forward pass, scaled during decoding; the frames between them
    are decoded but never converted. (decord's get_batch re-seeks on some index patterns, which
    doubled the cost on a 60 s clip.) A padded index is decoded once.

    The pass runs on to the video's last frame: a file cut mid-stream still opens and lists its
    frames, and only the frames past the cut fail to decode.
    """
    reader = _open(data, name, size)
    kept: dict[int, np.ndarray] = {}
    position = 0
    try:
        for idx in dict.fromkeys([*indices, len(reader) - 1]):
            if idx > position:
                reader.skip_frames(idx - position)
            kept[idx] = reader.next().asnumpy()
            position = idx + 1
    except Exception as e:  # decord's errors, as in _decode
        raise _reason(e, name, "frame data is damaged or cut off") from e
    return np.stack([kept[i] for i in indices])


def _decode(reader: Any, indices: list[int], name: str) -> np.ndarray:
    try:
        frames: np.ndarray = reader.get_batch(indices).asnumpy()
    except Exception as e:
        raise _reason(e, name, "frame data is damaged or cut off") from e
    return frames


def _reason(e: Exception, name: str, otherwise: str) -> VlmqError:
    text = str(e)
    if _NO_DECODER in text:
        return UnsupportedCodec(f"{name}: no decoder here reads this video's codec")
    if _NO_STREAM in text:
        return NoVideoStream(f"{name}: no video stream (audio or data only)")
    # decord prefixes each message with "[time] source.cc:line: "; the words after it are FFmpeg's.
    detail = _DECORD_PREFIX.sub("", text).strip().splitlines()[-1:] or [type(e).__name__]
    return CorruptVideo(f"{name}: {otherwise} ({detail[0][:300]})")
