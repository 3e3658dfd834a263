"""The results page reads one page of a job's lines from Postgres by keyset (repository.result_rows_from):
walked forward from the first page and back from the last, for every page size, the pages put together
are the whole list (result_rows), in order, over every kind of line: pages with and without a result, a
file that failed before any page, a file that failed after some pages (its own error line after them),
a file still waiting; and the UI's pager links walk the same way, refusing a forged cursor."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.app import create_app
from jobs import repository as repo
from jobs.config import Settings
from jobs.errors import CorruptMedia
from jobs.models import Item
from jobs.schemas import JobCreate
from jobs.service import JobService, build_service
from tests.integration.reprocess_fixtures import result


def _job(service: JobService) -> tuple[uuid.UUID, dict[str, uuid.UUID]]:
    names = ["a.pdf", "b.pdf", "c.pdf", "d.pdf"]
    items = [{"custom_id": n, "uri": f"s3://{service.store.bucket}/in/{n}"} for n in names]
    job, _ = service.submit("tenant-a", JobCreate.model_validate({"items": items}))
    with service.sessions() as s:
        ids = dict(s.execute(select(Item.custom_id, Item.id).where(Item.job_id == job.id)).all())
    for n in ("a.pdf", "b.pdf", "c.pdf"):
        assert service.begin_prep(ids[n]) is not None
    pages = lambda src, n: [(p, f"media/{src}/{p}.png") for p in range(1, n + 1)]  # noqa: E731
    (ready,) = service.finish_prep(ids["a.pdf"], pages("a", 3))  # 3 pages: the first gets a result
    (unit,) = service.claim_units(ready[:1])
    assert service.complete_units([(unit, result())])
    service.fail_items([ids["b.pdf"]], CorruptMedia("not a readable PDF"))  # no page made
    assert service.add_units(ids["c.pdf"], pages("c", 2))  # 2 pages, then page 3 breaks
    service.fail_items([ids["c.pdf"]], CorruptMedia("page 3 cannot be rendered"))
    return job.id, ids  # d.pdf: still waiting, no page yet


def _key(rows: list[repo.Row]) -> list[tuple[uuid.UUID, uuid.UUID | None, uuid.UUID | None]]:
    return [(src.id, unit.id if unit else None, res.id if res else None) for src, unit, res in rows]


def _walk(s: Session, job_id: uuid.UUID, limit: int, back: bool) -> list[repo.Row]:
    """Every page in turn, forward from the first page or back from the last; the rows put together."""
    rows: list[repo.Row] = []
    at: repo.LineKey | None = None
    for _ in range(100):
        if back:
            page, more = repo.result_rows_from(s, job_id, limit, before=at) if at else _last(s, job_id, limit)
            rows[:0] = [row for row, _ in page]
        else:
            page, more = repo.result_rows_from(s, job_id, limit, after=at)
            rows += [row for row, _ in page]
        assert len(page) == limit or not more
        if not more:
            return rows
        at = page[0][1] if back else page[-1][1]
    raise AssertionError("the pages did not end")


def _last(s: Session, job_id: uuid.UUID, limit: int) -> tuple[list[tuple[repo.Row, repo.LineKey]], bool]:
    """The last page: the lines before one past the end (a key after every line of the job)."""
    end = (datetime(9999, 1, 1, tzinfo=UTC), "", uuid.UUID(int=0), 0, 0)
    return repo.result_rows_from(s, job_id, limit, before=end)


def test_every_page_of_lines_is_the_same_slice_of_the_whole(settings: Settings) -> None:
    service = build_service(settings)
    job_id, ids = _job(service)
    with service.sessions() as s:
        whole = repo.result_rows(s, job_id)
        # a: 3 pages; b: its error; c: 2 pages and then its own error line; d: waiting.
        assert [(src.custom_id, unit.page if unit else None) for src, unit, _ in whole] == [
            ("a.pdf", 1), ("a.pdf", 2), ("a.pdf", 3), ("b.pdf", None),
            ("c.pdf", 1), ("c.pdf", 2), ("c.pdf", None), ("d.pdf", None),
        ]  # fmt: skip
        assert sum(res is not None for _, _, res in whole) == 1
        for limit in (1, 2, 3, 7, 8, 50):
            assert _key(_walk(s, job_id, limit, back=False)) == _key(whole), limit
            assert _key(_walk(s, job_id, limit, back=True)) == _key(whole), limit
            for i in range(len(whole)):  # from any line, forward and back: the next and previous lines
                after, _ = repo.result_rows_from(s, job_id, limit, after=_walk_key(s, job_id, i))
                assert _key([r for r, _ in after]) == _key(whole[i + 1 : i + 1 + limit]), (limit, i)
                before, _ = repo.result_rows_from(s, job_id, limit, before=_walk_key(s, job_id, i))
                assert _key([r for r, _ in before]) == _key(whole[max(i - limit, 0) : i]), (limit, i)
    assert set(ids) == {"a.pdf", "b.pdf", "c.pdf", "d.pdf"}
    for chunk in (1, 3, 2000):  # the streamed rows (output files, the results stream): the same, in order
        with service.sessions() as s, s.begin():
            assert _key(list(repo.stream_result_rows(s, job_id, chunk=chunk))) == _key(whole), chunk


def _walk_key(s: Session, job_id: uuid.UUID, i: int) -> repo.LineKey:
    """The key of the job's i-th line."""
    page, _ = repo.result_rows_from(s, job_id, 50)
    return page[i][1]


def test_the_ui_pager_walks_the_pages_and_refuses_a_forged_cursor(settings: Settings) -> None:
    service = build_service(settings)
    job_id, _ = _job(service)
    seen: list[tuple[str, str]] = []
    with TestClient(create_app(settings)) as client:
        client.post("/ui/login", data={"api_key": "test-key"}, follow_redirects=False)
        url: str | None = f"/ui/jobs/{job_id}?limit=3"
        while url:
            page = client.get(url)
            assert page.status_code == 200, page.text
            html = page.text
            seen += re.findall(r'data-custom-id="([^"]+)" data-page="([^"]*)"', html)
            nxt = re.search(r'href="(\?limit=3&amp;after=[^"]+)"', html)
            url = f"/ui/jobs/{job_id}" + nxt.group(1).replace("&amp;", "&") if nxt else None
        assert [c for c, _ in seen] == ["a.pdf"] * 3 + ["b.pdf"] + ["c.pdf"] * 3 + ["d.pdf"]
        back = re.search(r'href="(\?limit=3&amp;before=[^"]+)"', html)
        assert back is not None  # the last page links to the one before it
        prev = client.get(f"/ui/jobs/{job_id}" + back.group(1).replace("&amp;", "&"))
        assert re.findall(r'data-custom-id="([^"]+)"', prev.text) == ["b.pdf", "c.pdf", "c.pdf"]
        for forged in ("not-a-cursor", "W10", "eyJhIjoxfQ"):  # junk, [], {"a": 1}
            bad = client.get(f"/ui/jobs/{job_id}?after={forged}")
            assert bad.status_code == 422 and "not a results cursor" in bad.text, bad.text
