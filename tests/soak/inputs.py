"""The soak's inputs, put in the stack's bucket (under ``corpus/``, which every tenant is granted).

Every page and image is unique (its colour is a counter), so that two S3 objects with the same bytes can
only mean one payload written twice under two keys: the check in tests.soak.storage. Broken inputs
(a truncated PDF) fail with their own code; a "late" input is named before it exists (the item fails),
then uploaded, so that a retry of its job succeeds.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable

import pymupdf
from PIL import Image

from tests.chaos.stack import Stack


def _rgb(n: int) -> tuple[int, int, int]:
    return (n & 0xFF, (n >> 8) & 0xFF, (n >> 16) & 0xFF)


class Corpus:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self._colour = itertools.count(1)  # < 2**24 pages and images in all
        self._name = itertools.count(1)
        self.pdfs = self.images = 0

    def _key(self, ext: str) -> str:
        return f"corpus/{next(self._name):07d}.{ext}"

    def pdf_bytes(self, pages: int) -> bytes:
        doc = pymupdf.open()
        for _ in range(pages):
            n = next(self._colour)
            page = doc.new_page(width=90, height=120)
            page.draw_rect(page.rect, color=None, fill=tuple(c / 255 for c in _rgb(n)))
            page.insert_text((6, 20), f"soak page {n}", fontsize=6)
        data: bytes = doc.tobytes(garbage=3, deflate=True)
        doc.close()
        return data

    def image_bytes(self) -> bytes:
        buf = io.BytesIO()
        Image.new("RGB", (16, 12), _rgb(next(self._colour))).save(buf, "PNG")
        return buf.getvalue()

    def pdf(self, pages: int) -> str:
        self.pdfs += 1
        return self.stack.put(self._key("pdf"), self.pdf_bytes(pages))

    def folder(self, pdfs: int, pages: Callable[[], int]) -> str:
        """``pdfs`` PDFs in a folder of their own (``pages()`` pages each), for a source job: the glob
        that lists exactly them."""
        folder = f"corpus/src-{next(self._name):07d}"
        for i in range(pdfs):
            self.pdfs += 1
            self.stack.put(f"{folder}/{i:05d}.pdf", self.pdf_bytes(pages()))
        return f"s3://{self.stack.bucket}/{folder}/**/*.pdf"

    def image(self) -> str:
        self.images += 1
        return self.stack.put(self._key("png"), self.image_bytes())

    def broken(self) -> str:
        """A PDF cut in half: fails with ``corrupt_media`` every time it is tried."""
        data = self.pdf_bytes(2)
        return self.stack.put(self._key("pdf"), data[: len(data) // 2])

    def late(self) -> tuple[str, str, bytes]:
        """(uri, key, bytes) of an image not stored yet: ``stack.put(key, bytes)`` makes it exist."""
        key = self._key("png")
        return f"s3://{self.stack.bucket}/{key}", key, self.image_bytes()
