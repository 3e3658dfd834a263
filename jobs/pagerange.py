"""Page ranges as users write them: ``"1-3,7"``, ``"5-"`` (5 to the end), ``"2"``. Pages are 1-based.

``parse`` checks the syntax (at submission, so a typo is a 422, not a failed item); ``select`` resolves
a range against a document's page count (in prep, where the count is known).
"""

from __future__ import annotations

import re

from jobs.errors import PagesOutOfRange

_PART = re.compile(r"^\s*(\d+)\s*(?:(-)\s*(\d*)\s*)?$")


def parse(spec: str) -> list[tuple[int, int | None]]:
    """(first, last) pairs; last None means "to the end". Raises ValueError naming the bad part."""
    parts = []
    for raw in spec.split(","):
        m = _PART.match(raw)
        if m is None:
            raise ValueError(f"bad page range {raw.strip()!r}: write pages like 1-3,7 or 5-")
        first = int(m.group(1))
        last = None if m.group(2) and not m.group(3) else int(m.group(3) or first)
        if first < 1 or (last is not None and last < first):
            raise ValueError(f"bad page range {raw.strip()!r}: pages start at 1 and ranges go upwards")
        parts.append((first, last))
    return parts


def select(spec: str | None, count: int) -> list[int]:
    """The pages ``spec`` names, sorted and without repeats; every page when ``spec`` is None."""
    if not spec:
        return list(range(1, count + 1))
    pages: set[int] = set()
    for first, last in parse(spec):
        end = count if last is None else last
        if first > count or end > count:
            raise PagesOutOfRange(f"pages {spec!r} asked for, but the document has {count} pages")
        pages.update(range(first, end + 1))
    return sorted(pages)
