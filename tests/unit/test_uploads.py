"""Pages stored on a thread pool while the next renders (workers.uploads): handed on in page order, only
once stored, never more than ``ahead`` in flight; a failure is raised after the pages before it."""

from __future__ import annotations

import threading
import time

import pytest

from jobs.errors import StorageUnavailable
from jobs.work import PreparedUnit
from workers.uploads import Uploads


def _page(n: int, delay: float = 0.0, log: list[int] | None = None, fail: bool = False):  # type: ignore[no-untyped-def]
    def store() -> PreparedUnit:
        time.sleep(delay)
        if fail:
            raise StorageUnavailable(f"S3 down at page {n}")
        if log is not None:
            log.append(n)
        return PreparedUnit(n, f"media/page-{n}.png", None, ())

    return store


def test_pages_come_back_in_order_even_when_a_later_one_is_stored_first() -> None:
    uploads, out, stored = Uploads(ahead=4), [], []  # type: ignore[var-annotated]
    for n, delay in ((1, 0.2), (2, 0.0), (3, 0.0)):
        out += [u.page for u in uploads.submit(_page(n, delay, stored))]
    out += [u.page for u in uploads.drain()]
    assert out == [1, 2, 3] and stored[-1] == 1  # page 1 finished last, still handed on first


def test_no_more_than_ahead_pages_are_in_flight() -> None:
    running, most, lock = 0, 0, threading.Lock()

    def store(n: int) -> PreparedUnit:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.02)
        with lock:
            running -= 1
        return PreparedUnit(n, f"media/page-{n}.png", None, ())

    uploads = Uploads(ahead=2)
    out = [u.page for n in range(1, 9) for u in uploads.submit(lambda n=n: store(n))]
    out += [u.page for u in uploads.drain()]
    assert out == list(range(1, 9)) and most <= 2


def test_the_pages_before_a_failed_upload_are_handed_on_first() -> None:
    uploads, out = Uploads(ahead=4), []  # type: ignore[var-annotated]
    for store in (_page(1, 0.05), _page(2), _page(3, fail=True), _page(4)):
        out += [u.page for u in uploads.submit(store)]
    with pytest.raises(StorageUnavailable, match="page 3"):
        for u in uploads.drain():
            out.append(u.page)
    assert out == [1, 2]
    assert list(uploads.drain()) == []  # page 4 came after the failure: not handed on, even if stored
    uploads.close()  # page 4's upload is waited for (or cancelled), not left running


def test_ahead_zero_stores_each_page_before_returning() -> None:
    stored: list[int] = []
    uploads = Uploads(ahead=0)
    assert [u.page for u in uploads.submit(_page(1, log=stored))] == [1] and stored == [1]
    assert list(uploads.drain()) == []


def test_wait_hands_on_this_page_and_those_before_it_once_stored() -> None:
    """What prep asks for the first chunk's last page: that page now, not after the next renders."""
    uploads = Uploads(ahead=4)
    assert list(uploads.submit(_page(1, 0.1))) == []  # still uploading: handed on later
    assert [u.page for u in uploads.submit(_page(2, 0.1), wait=True)] == [1, 2]  # both, once stored
    assert list(uploads.drain()) == []
