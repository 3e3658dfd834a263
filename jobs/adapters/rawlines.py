"""The lines of a byte stream read in chunks, each with its byte offsets, in bounded memory: a manifest is
read in pages from a line's start (jobs.adapters.manifests), so every line must say where it ends."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class RawLine:
    number: int
    start: int
    end: int  # the offset after its line break (or the object's end)
    data: bytes | None  # its line break included; None: over max_line_bytes (break included), not kept


def split_lines(chunks: Iterable[bytes], offset: int, line: int, max_line_bytes: int) -> Iterator[RawLine]:
    """The lines of bytes that start at ``offset``, a line's start numbered ``line``. Bytes after the last
    line break make a line because the bytes end there: pass them to the object's end, or stop taking
    lines before. A line over ``max_line_bytes`` is counted through, never held whole."""
    lines = _Lines(offset, line, max_line_bytes)
    for chunk in chunks:
        yield from lines.feed(chunk)
    if lines.size:
        yield lines.end(b"")


class _Lines:
    def __init__(self, offset: int, line: int, max_line_bytes: int) -> None:
        self.start, self.number, self.max = offset, line, max_line_bytes
        self.size, self.buffer = 0, bytearray()  # of the line so far

    def feed(self, chunk: bytes) -> Iterator[RawLine]:
        at = 0
        while (newline := chunk.find(b"\n", at)) >= 0:
            yield self.end(chunk[at : newline + 1])
            at = newline + 1
        self._add(chunk[at:])

    def end(self, piece: bytes) -> RawLine:
        self._add(piece)
        raw = RawLine(
            self.number, self.start, self.start + self.size, bytes(self.buffer) if self.fits else None
        )
        self.number, self.start, self.size = self.number + 1, raw.end, 0
        self.buffer.clear()
        return raw

    @property
    def fits(self) -> bool:
        return self.size <= self.max

    def _add(self, piece: bytes) -> None:
        self.size += len(piece)
        if self.fits:
            self.buffer += piece
        else:
            self.buffer.clear()  # too long already: only its length is kept
