"""Page ranges: the syntax users write, and its resolution against a page count."""

from __future__ import annotations

import pytest

from jobs.errors import PagesOutOfRange
from jobs.pagerange import parse, select


@pytest.mark.parametrize(
    ("spec", "count", "pages"),
    [
        ("1-3,7", 10, [1, 2, 3, 7]),
        ("7, 1-3", 10, [1, 2, 3, 7]),  # sorted
        ("2,2,1-2", 5, [1, 2]),  # no repeats
        ("8-", 10, [8, 9, 10]),  # to the end
        ("5", 5, [5]),
        (None, 3, [1, 2, 3]),
        ("", 2, [1, 2]),
    ],
)
def test_select(spec: str | None, count: int, pages: list[int]) -> None:
    assert select(spec, count) == pages


@pytest.mark.parametrize("spec", ["0", "3-1", "a", "1-2-3", "1,,2", "-3", "1;2", " "])
def test_bad_syntax_names_the_part(spec: str) -> None:
    with pytest.raises(ValueError, match="bad page range"):
        parse(spec)


@pytest.mark.parametrize("spec", ["11", "9-12", "11-"])
def test_pages_beyond_the_last_are_an_error(spec: str) -> None:
    with pytest.raises(PagesOutOfRange, match="the document has 10 pages") as info:
        select(spec, 10)
    assert info.value.code == "pages_out_of_range"
