"""Benchmark inputs: deterministic text-heavy PDF pages (A4), like the documents vlmq is for."""

from __future__ import annotations

import random

import pymupdf
from PIL import Image

from workers.media.images import decode_image
from workers.media.pdf import render_pdf

WORDS = [
    "report",
    "revenue",
    "region",
    "quarter",
    "total",
    "margin",
    "growth",
    "cost",
    "table",
    "figure",
    "note",
    "summary",
    "customer",
    "product",
    "market",
    "share",
    "forecast",
    "risk",
    "audit",
    "policy",
    "chapter",
    "section",
]


def make_pdf(pages: int, seed: int = 0) -> bytes:
    rng = random.Random(seed)
    doc = pymupdf.open()
    for n in range(pages):
        page = doc.new_page(width=595, height=842)
        page.insert_text((60, 70), f"Document {seed} - page {n + 1}", fontsize=20)
        for line in range(45):
            text = " ".join(rng.choice(WORDS) for _ in range(11))
            page.insert_text((60, 110 + line * 15), text, fontsize=10)
    data: bytes = doc.tobytes(garbage=3, deflate=True, no_new_id=True)
    doc.close()
    return data


def documents(total_pages: int, pages_per_doc: int, first: int = 0) -> list[bytes]:
    """``first``: the first document's seed. Runs in one lease take different seeds, so that no run
    finds another's pages in the engine's prefix cache (or vlmq's, by content hash)."""
    return [make_pdf(pages_per_doc, seed=first + i) for i in range(total_pages // pages_per_doc)]


def page_images(docs: list[bytes], longest_side: int) -> list[Image.Image]:
    """Exactly what the prep worker makes of ``docs``: rendered, PNG-encoded, decoded."""
    return [
        decode_image(p.png) for d in docs for p in render_pdf(d, longest_side=longest_side, max_pages=1000)
    ]
