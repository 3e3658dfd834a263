"""A sampled video clip, model-ready: the frames and the metadata both engines give GLM-4.1V.

Stored in S3 as one object (``pack``/``unpack``): an uncompressed zip holding ``clip.json`` and one
JPEG per frame. One GET brings the whole clip to the GPU worker, which only decodes JPEGs; zip is the
stdlib's and any tool can open it. JPEG (quality 95) rather than PNG: the source is lossy video
already, and 600 PNG frames would be several times larger and slower to decode.
This module needs no video decoder: the GPU worker never imports one, and the API reads a clip's frames
through it to show them on the results page (``preview_frames``, ``workers.media.sheet``).
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from jobs.errors import CorruptMedia

CLIP_NAME = "clip.zip"
CONTENT_TYPE = "application/zip"
FORMAT = "vlmq-clip-1"
JPEG_QUALITY = 95
_UNREADABLE = (zipfile.BadZipFile, KeyError, ValueError, OSError)  # what a damaged clip raises


@dataclass(frozen=True, eq=False)
class VideoClip:
    """``frames`` is T x H x W x 3 uint8, T even (GLM-4.1V's temporal patch is 2 frames).

    ``frames_indices[i]`` is the source frame that frame i came from (the last one repeated when the
    sample was padded to an even count), so ``frames_indices[i] / fps`` is its time in seconds: the
    timestamps the processor writes into the prompt, one per pair of frames.
    """

    frames: np.ndarray
    fps: float  # the source's frame rate
    frames_indices: tuple[int, ...]
    total_num_frames: int  # in the source
    duration: float  # of the source, seconds

    def __post_init__(self) -> None:
        t = self.frames.shape[0]
        if self.frames.ndim != 4 or self.frames.shape[3] != 3 or self.frames.dtype != np.uint8:
            raise ValueError(
                f"frames must be T x H x W x 3 uint8, got {self.frames.shape} {self.frames.dtype}"
            )
        if t == 0 or t % 2 or len(self.frames_indices) != t:
            raise ValueError(f"{t} frames with {len(self.frames_indices)} indices: need an even count")

    @property
    def timestamps(self) -> list[float]:
        return [i / self.fps for i in self.frames_indices]

    def metadata(self) -> dict[str, Any]:
        """The fields of transformers' ``VideoMetadata`` (and of vLLM's video metadata dict)."""
        return {
            "total_num_frames": self.total_num_frames,
            "fps": self.fps,
            "width": int(self.frames.shape[2]),
            "height": int(self.frames.shape[1]),
            "duration": self.duration,
            "video_backend": "decord",
            "frames_indices": list(self.frames_indices),
        }


def clip_key(source_sha: str, variant: str) -> str:
    """Content-addressed: the same video sampled the same way lands on the same key."""
    return f"media/{source_sha}/video-{variant}/{CLIP_NAME}"


def is_clip_key(key: str) -> bool:
    return key.endswith("/" + CLIP_NAME)


def pack(clip: VideoClip) -> bytes:
    meta = {"format": FORMAT, **clip.metadata()}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr("clip.json", json.dumps(meta))
        for i, frame in enumerate(clip.frames):
            z.writestr(f"frames/{i:05d}.jpg", _jpeg(frame))
    return buf.getvalue()


def _jpeg(frame: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(frame).save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def _meta(z: zipfile.ZipFile) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads(z.read("clip.json"))
    if meta.get("format") != FORMAT:
        raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT}")
    return meta


def _frame_names(z: zipfile.ZipFile) -> list[str]:
    return sorted(n for n in z.namelist() if n.startswith("frames/"))


def unpack(data: bytes) -> VideoClip:
    """The clip ``pack`` wrote; anything else -> CorruptMedia (a unit's media fails alone)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            meta = _meta(z)
            frames = np.stack(
                [np.asarray(Image.open(io.BytesIO(z.read(n))).convert("RGB")) for n in _frame_names(z)]
            )
        return VideoClip(
            frames=frames,
            fps=float(meta["fps"]),
            frames_indices=tuple(int(i) for i in meta["frames_indices"]),
            total_num_frames=int(meta["total_num_frames"]),
            duration=float(meta["duration"]),
        )
    except _UNREADABLE as e:
        raise CorruptMedia(f"stored video clip cannot be read: {e}") from e


def preview_frames(data: bytes, count: int, side: int) -> list[tuple[float, Image.Image]]:
    """At most ``count`` distinct frames of a stored clip, spread evenly from its first to its last, each
    with its time in seconds and at most ``side`` px on its longest side: for people to look at (the
    results page). Only those frames are decoded, and each at the smallest JPEG scale that still covers
    ``side``: a clip may hold 600 frames of up to 1288 px. Unreadable -> CorruptMedia."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            meta, names = _meta(z), _frame_names(z)
            fps, indices = float(meta["fps"]), [int(i) for i in meta["frames_indices"]]
            if not names or len(names) != len(indices):
                raise ValueError(f"{len(names)} frames with {len(indices)} indices")
            return [(indices[i] / fps, _thumbnail(z.read(names[i]), side)) for i in _spread(indices, count)]
    except _UNREADABLE as e:
        raise CorruptMedia(f"stored video clip cannot be read: {e}") from e


def _spread(indices: list[int], count: int) -> list[int]:
    """Positions of ``count`` frames at most, first and last included, evenly apart; a frame repeated
    to pad the clip to an even count (the same source index) is shown once."""
    distinct = [i for i, source in enumerate(indices) if i == 0 or source != indices[i - 1]]
    if len(distinct) <= count:
        return distinct
    step = (len(distinct) - 1) / max(1, count - 1)
    return [distinct[round(k * step)] for k in range(count)]


def _thumbnail(jpeg: bytes, side: int) -> Image.Image:
    src = Image.open(io.BytesIO(jpeg))
    scale = min(1.0, side / max(src.size))
    src.draft("RGB", (math.ceil(src.width * scale), math.ceil(src.height * scale)))  # DCT scaling
    img = src.convert("RGB")
    img.thumbnail((side, side))
    return img
