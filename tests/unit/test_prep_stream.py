"""Streaming prep with fakes (a service that records each call, a blob store in memory): pages go to
the GPU queue in chunks of ``batch_size`` while the rest are still rendered, and each way of breaking
mid-stream ends as RELIABILITY.md says (*Streaming prep*)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import pytest

from jobs.config import Settings
from jobs.errors import CorruptMedia, RetryableError, StorageUnavailable, VlmqError
from jobs.service import JobService
from jobs.work import PreparedUnit, PrepWork
from tests.fakes import MemoryStore
from tests.fixtures.make_fixtures import text_pdf
from workers import prep
from workers.context import WorkerContext

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
URI = "s3://vlmq/uploads/t/doc.pdf"  # tenant t's own upload
KEY = URI[len("s3://vlmq/") :]


class FakePrepService:
    """The JobService calls prep makes, recorded with the page images stored at that moment."""

    def __init__(self, store: MemoryStore, stop_after_chunks: int | None = None, granularity: str = "page"):
        self.store, self.stop_after_chunks, self.granularity = store, stop_after_chunks, granularity
        self.dispatcher = self
        self.item_id, self.job_id = uuid.uuid4(), uuid.uuid4()
        self.units: dict[int, uuid.UUID] = {}  # page -> unit id
        self.sent: list[tuple[list[int], int]] = []  # (pages of a dispatched chunk, pages stored by then)
        self.calls: list[str] = []
        self.finished: tuple[list[int], int | None, list[uuid.UUID]] | None = None
        self.error: VlmqError | None = None

    def stored_pages(self) -> int:
        return sum(1 for k in self.store.objects if k.endswith(".png"))

    def begin_prep(self, item_id: uuid.UUID) -> PrepWork:
        return PrepWork(item_id, self.job_id, URI, 64, tenant="t", granularity=self.granularity)

    def add_units(
        self, item_id: uuid.UUID, units: Sequence[PreparedUnit], attempt: int = 0
    ) -> list[uuid.UUID] | None:
        self.calls.append("add_units")
        if self.stop_after_chunks is not None and self.calls.count("add_units") > self.stop_after_chunks:
            return None  # the job was cancelled meanwhile
        return [self.units.setdefault(u.page, uuid.uuid4()) for u in units]

    def infer(self, unit_ids: Sequence[uuid.UUID], priority: str = "normal") -> None:
        pages = [p for p, u in self.units.items() if u in unit_ids]
        self.sent.append((pages, self.stored_pages()))

    def finish_prep(
        self, item_id: uuid.UUID, units: Sequence[PreparedUnit], page_count: int | None = None,
        dispatched: Sequence[uuid.UUID] = (),
    ) -> list[list[uuid.UUID]]:  # fmt: skip
        self.finished = ([u.page for u in units], page_count, list(dispatched))
        return [[self.units.setdefault(u.page, uuid.uuid4()) for u in units]]

    def fail_items(self, item_ids: Sequence[uuid.UUID], error: VlmqError) -> None:
        self.error = error

    def give_back(self, item_ids: Sequence[uuid.UUID], error: VlmqError) -> list[uuid.UUID]:
        self.error = error
        return list(item_ids)

    def finalize(self, job_id: uuid.UUID, sources: Sequence[uuid.UUID] | None = None) -> bool:
        self.calls.append("finalize")
        return False


def _run(
    pdf: bytes, batch_size: int = 2, ahead: int = 0, first: int | None = None, **fakes: Any
) -> FakePrepService:
    """``ahead`` 0 by default: each page stored before the next renders, so that what was stored when
    a chunk went out is exact; the overlapped uploads (the default setting) are tested on their own.
    ``first``: the first chunk's pages (default ``batch_size``: every chunk the same size)."""
    store = MemoryStore()
    store.objects[KEY] = pdf
    service = FakePrepService(store, **fakes)
    limits = {"batch_size": batch_size, "first_chunk_pages": first or batch_size}
    settings = Settings(limits=limits, media={"upload_pages_ahead": ahead}, _env_file=None)  # type: ignore[call-arg]
    prep.prepare(WorkerContext(settings, cast(JobService, service), store), service.item_id)
    return service


def test_the_first_batch_is_dispatched_before_the_last_page_is_rendered() -> None:
    service = _run(text_pdf(5))
    # Each chunk goes out as soon as its pages are stored: pages 1-2 with 2 pages stored, not 5.
    assert service.sent[:2] == [([1, 2], 2), ([3, 4], 4)]
    # finish_prep records the last page with the source: the page count, and what went out already.
    assert service.finished == ([5], 5, [service.units[p] for p in (1, 2, 3, 4)])
    assert service.sent[2] == ([5], 5) and service.error is None


def test_the_first_page_goes_alone_by_default_then_full_batches() -> None:
    store = MemoryStore()
    store.objects[KEY] = text_pdf(8)
    service = FakePrepService(store)
    settings = Settings(limits={"batch_size": 3}, media={"upload_pages_ahead": 0}, _env_file=None)  # type: ignore[call-arg]
    assert settings.limits.first_chunk_pages == 1
    prep.prepare(WorkerContext(settings, cast(JobService, service), store), service.item_id)
    # Page 1 went to the GPU with one page stored; then 3 at a time; the last two with the source.
    assert service.sent == [([1], 1), ([2, 3, 4], 4), ([5, 6, 7], 7), ([8], 8)]
    assert service.finished is not None and service.finished[:2] == ([8], 8)


@pytest.mark.parametrize("ahead", [1, 4])
def test_a_first_chunk_larger_than_the_batch_is_capped_and_uploads_ahead_keep_it(ahead: int) -> None:
    service = _run(text_pdf(7), batch_size=2, ahead=ahead, first=5)
    assert [pages for pages, _ in service.sent] == [[1, 2], [3, 4], [5, 6], [7]]


@pytest.mark.parametrize("first", [1, 3])
def test_the_first_chunk_goes_out_before_the_next_page_renders_while_uploads_overlap(
    first: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With uploads overlapping the rendering (the default), a page is handed on once stored, which for
    later pages is when the next page has rendered. The first chunk's last page is waited for instead:
    the GPU gets the source's first chunk one page's rendering sooner."""
    events: list[str] = []
    render = prep.iter_source

    def rendering(data: bytes, opts: Any) -> Any:
        for page in render(data, opts):
            events.append(f"rendered {page.page}")
            yield page

    put = MemoryStore.put

    def slow_put(self: MemoryStore, *args: Any, **kwargs: Any) -> Any:
        time.sleep(0.02)  # an S3 round trip: the upload is still going on when the next page could render
        return put(self, *args, **kwargs)

    monkeypatch.setattr(prep, "iter_source", rendering)
    monkeypatch.setattr(MemoryStore, "put", slow_put)
    monkeypatch.setattr(FakePrepService, "infer", lambda self, ids, priority="normal": events.append("sent"))
    _run(text_pdf(6), batch_size=3, ahead=4, first=first)
    assert events[: first + 1] == [*(f"rendered {n}" for n in range(1, first + 1)), "sent"]


def test_the_document_granularity_still_makes_one_unit_at_the_end() -> None:
    service = _run(text_pdf(3), granularity="document")
    assert "add_units" not in service.calls and service.sent == [([0], 3)]
    assert service.finished == ([0], None, [])  # one unit of several pages (page 0), sent at the end


def test_a_page_that_cannot_be_rendered_fails_the_source_after_the_pages_before_it_went_out() -> None:
    service = _run((FIXTURES / "missing_pages.pdf").read_bytes(), batch_size=4)
    # Pages 1-4 went out as a chunk, 5-6 when page 7 failed; the source fails with page 7's error.
    assert [pages for pages, _ in service.sent] == [[1, 2, 3, 4], [5, 6]]
    assert isinstance(service.error, CorruptMedia) and "page 7 cannot be rendered" in str(service.error)
    assert service.finished is None and service.calls[-1] == "finalize"


def test_a_cancel_mid_stream_stops_the_rendering() -> None:
    service = _run(text_pdf(12), stop_after_chunks=1)
    assert [pages for pages, _ in service.sent] == [[1, 2]]
    assert service.stored_pages() == 4  # the second chunk was stored, then found the job stopped
    assert service.finished is None and service.error is None and service.calls[-1] == "finalize"


@pytest.mark.parametrize("ahead", [0, 1, 4])
def test_a_transient_error_mid_stream_gives_the_source_back_for_a_retry(ahead: int) -> None:
    def s3_down_at_page_3(key: str) -> Exception | None:
        return StorageUnavailable("S3 unreachable") if key.endswith("page-00003.png") else None

    service = FakePrepService(MemoryStore(fail=s3_down_at_page_3))
    service.store.objects[KEY] = text_pdf(5)
    limits = {"batch_size": 2, "first_chunk_pages": 2}
    settings = Settings(limits=limits, media={"upload_pages_ahead": ahead}, _env_file=None)  # type: ignore[call-arg]
    with pytest.raises(RetryableError):
        prep.prepare(WorkerContext(settings, cast(JobService, service), service.store), service.item_id)
    # Pages 1-2 had gone out, however far ahead the uploads ran; the source is given back (its retry
    # renders it again: the real service's ON CONFLICT keeps pages 1-2 single, test_streaming.py).
    assert [pages for pages, _ in service.sent] == [[1, 2]] and isinstance(service.error, StorageUnavailable)
    assert service.finished is None


@pytest.mark.parametrize("ahead", [1, 4])
def test_uploads_ahead_keep_the_page_order_and_every_page(ahead: int) -> None:
    service = _run(text_pdf(7), batch_size=2, ahead=ahead)
    assert [pages for pages, _ in service.sent] == [[1, 2], [3, 4], [5, 6], [7]]
    assert service.finished is not None and service.finished[1] == 7 and service.error is None
    assert service.stored_pages() == 7
