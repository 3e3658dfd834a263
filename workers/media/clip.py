"""A sampled video clip, model-ready: the frames and the metadata both engines give GLM-4.1V.

Stored in S3 as one object (``pack``/``unpack``): an uncompressed zip holding ``clip.json`` and one
JPEG per frame. One GET brings the whole clip to the GPU worker, which only decodes JPEGs; zip is the
stdlib's and any tool can open it. JPEG (quality 95) rather than PNG: the source is lossy video
already, and 600 PNG frames would be several times larger and slower to decode.
This module needs no video decoder: the GPU worker never imports one.
"""

from __future__ import annotations

import io
import json
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


def unpack(data: bytes) -> VideoClip:
    """The clip ``pack`` wrote; anything else -> CorruptMedia (a unit's media fails alone)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            meta = json.loads(z.read("clip.json"))
            names = sorted(n for n in z.namelist() if n.startswith("frames/"))
            frames = np.stack([np.asarray(Image.open(io.BytesIO(z.read(n))).convert("RGB")) for n in names])
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT}")
        return VideoClip(
            frames=frames,
            fps=float(meta["fps"]),
            frames_indices=tuple(int(i) for i in meta["frames_indices"]),
            total_num_frames=int(meta["total_num_frames"]),
            duration=float(meta["duration"]),
        )
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as e:
        raise CorruptMedia(f"stored video clip cannot be read: {e}") from e
