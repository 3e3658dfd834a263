"""Regenerate sample.pdf: `python -m jobs.samples.make_sample`. Deterministic; three pages that look
clearly different (a cover, a table, a chart)."""

from __future__ import annotations

from pathlib import Path

import pymupdf

W, H = 595, 842


def _cover(page: pymupdf.Page) -> None:
    page.draw_rect(pymupdf.Rect(0, 0, W, 260), color=(0.12, 0.3, 0.7), fill=(0.12, 0.3, 0.7))
    page.insert_text((60, 200), "vlmq sample report", fontsize=40, color=(1, 1, 1))
    page.insert_text((60, 340), "Batch document understanding with GLM-4.1V", fontsize=16)


def _table(page: pymupdf.Page) -> None:
    page.draw_rect(pymupdf.Rect(0, 0, W, 120), color=(0.1, 0.5, 0.25), fill=(0.1, 0.5, 0.25))
    page.insert_text((60, 80), "Throughput by worker", fontsize=28, color=(1, 1, 1))
    rows = [("worker", "pages/s", "cores"), ("prep (pymupdf)", "38.1", "1"), ("gpu (vLLM, H100)", "4.9", "-"),
            ("cpu (tiny model)", "0.8", "2")]  # fmt: skip
    for r, row in enumerate(rows):
        y = 140 + r * 40
        fill = (0.75, 0.9, 0.8) if r == 0 else None
        for c, cell in enumerate(row):
            x = 60 + c * 160
            page.draw_rect(pymupdf.Rect(x, y, x + 160, y + 40), color=(0, 0, 0), fill=fill)
            page.insert_text((x + 8, y + 26), cell, fontsize=13)


def _chart(page: pymupdf.Page) -> None:
    page.insert_text((60, 90), "Pages per second", fontsize=24)
    for i, height in enumerate((150, 300, 450)):
        x = 100 + i * 140
        page.draw_rect(
            pymupdf.Rect(x, 700 - height, x + 90, 700), color=(0.8, 0.3, 0.1), fill=(0.8, 0.3, 0.1)
        )
    page.draw_line(pymupdf.Point(80, 700), pymupdf.Point(540, 700))


def build() -> bytes:
    doc = pymupdf.open()
    for draw in (_cover, _table, _chart):
        draw(doc.new_page(width=W, height=H))
    doc.set_metadata({"title": "vlmq sample", "producer": "vlmq", "creationDate": "", "modDate": ""})
    data: bytes = doc.tobytes(garbage=4, deflate=True, no_new_id=True)
    doc.close()
    return data


if __name__ == "__main__":
    out = Path(__file__).with_name("sample.pdf")
    out.write_bytes(build())
    print(f"{out}: {out.stat().st_size} bytes")
