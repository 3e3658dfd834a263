"""Video decoding on one CPU core: `python -m bench.video` prints JSON figures for BENCHMARKS.md.

Two figures, on a synthetic 1280 x 720 H.264 clip at 30 fps (moving shapes over a gradient with
grain, x264 `veryfast`, CRF 23, a keyframe every 250 frames, as phones and editors write):
- decode: every frame, native size, in order (decord, one thread): the decoder's raw rate;
- prep: ``sample_video`` + ``clip.pack`` as the prep worker runs them on a 60 s clip (120 frames
  kept at 2 fps, sized to the token budget, JPEG-packed): source seconds and kept frames per second.
The process is pinned to one core first. Writing the clip needs PyAV (a dev dependency).
"""

from __future__ import annotations

import io
import json
import os
import time
from fractions import Fraction

import av
import numpy as np

from workers.media import clip
from workers.media.video import Sampling, sample_video

SIZE = (1280, 720)


def synthetic_clip(seconds: int, fps: int = 30, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    w, h = SIZE
    ramp = np.linspace(40, 200, w, dtype=np.float32)[None, :, None]
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23", "g": "250"}
        for i in range(seconds * fps):
            frame = np.broadcast_to(ramp, (h, w, 3)).copy()
            x = (i * 7) % (w - 200)
            frame[200:400, x : x + 200] = (220, 60, 40)
            frame[450:600, w - x - 150 : w - x] = (30, 160, 220)
            frame += rng.normal(0, 6, (h, w, 1)).astype(np.float32)  # sensor grain: keeps the bitrate real
            picture = av.VideoFrame.from_ndarray(frame.clip(0, 255).astype(np.uint8), format="rgb24")
            out.mux(stream.encode(picture))
        out.mux(stream.encode())
    return buf.getvalue()


class Timer:
    """Wall and CPU seconds of this process: on a shared machine the CPU time is the one-core cost."""

    def __enter__(self) -> Timer:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def decode_rate(data: bytes) -> dict[str, float]:
    import decord

    with Timer() as t:
        reader = decord.VideoReader(io.BytesIO(data), ctx=decord.cpu(0), num_threads=1)
        frames = 0
        for _ in range(len(reader)):
            reader.next()
            frames += 1
    return {
        "frames": frames,
        "wall_s": round(t.wall, 2),
        "cpu_s": round(t.cpu, 2),
        "frames_per_cpu_s": round(frames / t.cpu, 1),
    }


def prep_rate(data: bytes, source_seconds: float) -> dict[str, float | str]:
    with Timer() as t:
        sampled = sample_video(data, Sampling(), "bench.mp4")
        packed = clip.pack(sampled)
    kept = len(sampled.frames_indices)
    return {
        "kept_frames": kept,
        "frame_size": f"{sampled.frames.shape[2]} x {sampled.frames.shape[1]}",
        "clip_bytes": len(packed),
        "wall_s": round(t.wall, 2),
        "cpu_s": round(t.cpu, 2),
        "kept_frames_per_cpu_s": round(kept / t.cpu, 1),
        "source_seconds_per_cpu_s": round(source_seconds / t.cpu, 2),
    }


def main() -> None:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, as one prep process has
    short, long = synthetic_clip(10), synthetic_clip(60)
    figures = {
        "input": f"{SIZE[0]} x {SIZE[1]} H.264, 30 fps, {len(long) * 8 / 60e6:.1f} Mbit/s",
        "load_average": os.getloadavg()[0],
        "decode_10s": decode_rate(short),
        "prep_60s": prep_rate(long, 60.0),
    }
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
