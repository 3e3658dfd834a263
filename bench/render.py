"""Pages rendered per second on one CPU core, the way the prep worker renders them.

    python -m bench.render [--pages 40] [--side 1288] [--core 0] [--repeats 5]

Pinned to one core (os.sched_setaffinity) so the figure is per core whatever the machine. Each page is
rendered by vlmq's own render_pdf: rasterised at the longest side, PNG-encoded, text layer extracted.
Also: photos (4000 x 3000 JPEG) scaled to the same side by image_pages. Prints a Markdown table row
per input for BENCHMARKS.md, with the median of the repeats.

Two rates: per CPU-second of this process (what one core can do; stable on a shared machine) and per
wall-clock second (what it did, other processes on that core included).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import time
from collections.abc import Callable

from PIL import Image, ImageDraw

from bench.pages import make_pdf
from workers.media.images import image_pages
from workers.media.pdf import render_pdf


def _rates(work: Callable[[], int], repeats: int) -> tuple[list[float], list[float]]:
    """Pages per CPU second and per wall second, one of each per run, after one warm-up run."""
    work()
    cpu, wall = [], []
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        pages = work()
        cpu.append(pages / (time.process_time() - c0))
        wall.append(pages / (time.perf_counter() - w0))
    return cpu, wall


def _photo(seed: int) -> bytes:
    """Photo-like: smooth gradients, shapes and a little sensor noise (pure noise is no photo)."""
    w, h = 4000, 3000
    grad = Image.linear_gradient("L").resize((w, h))
    img = Image.merge(
        "RGB", (grad, grad.rotate(90).resize((w, h)), Image.radial_gradient("L").resize((w, h)))
    )
    draw = ImageDraw.Draw(img)
    for i in range(12):
        x, y = (seed * 977 + i * 331) % w, (seed * 613 + i * 197) % h
        draw.ellipse((x, y, x + 400, y + 300), fill=((i * 40) % 256, 90, 200 - i * 10))
    img = Image.blend(img, Image.effect_noise((w, h), 30).convert("RGB"), 0.08)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pages", type=int, default=40)
    ap.add_argument("--side", type=int, default=1288)
    ap.add_argument("--core", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    os.sched_setaffinity(0, {args.core})
    pdf = make_pdf(args.pages)
    photos = [_photo(i) for i in range(4)]
    cases: dict[str, Callable[[], int]] = {
        f"A4 text PDF page -> {args.side} px PNG + text layer": lambda: len(
            render_pdf(pdf, longest_side=args.side, max_pages=args.pages)
        ),
        f"4000 x 3000 JPEG photo -> {args.side} px PNG": lambda: sum(
            len(image_pages(p, longest_side=args.side)) for p in photos
        ),
    }
    print(f"one core (#{args.core}), {args.repeats} runs, load average {os.getloadavg()[0]:.1f}")
    print("| input | pages per CPU-second, median (min-max) | pages per wall second, median (min-max) |")
    for name, work in cases.items():
        cpu, wall = _rates(work, args.repeats)
        print(f"| {name} | {_fmt(cpu)} | {_fmt(wall)} |")


def _fmt(rates: list[float]) -> str:
    return f"{statistics.median(rates):.1f} ({min(rates):.1f}-{max(rates):.1f})"


if __name__ == "__main__":
    main()
