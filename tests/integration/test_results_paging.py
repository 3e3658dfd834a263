"""The results page reads one page of a job's lines from Postgres (repository.result_rows_page): the
same lines, in the same order, as the whole list (result_rows) cut in Python, for every page size and
offset, over every kind of line: pages with and without a result, a file that failed before any page,
a file that failed after some pages (its own error line after them), a file still waiting."""

from __future__ import annotations

import uuid

from sqlalchemy import select

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
        for limit in (1, 2, 3, 50):
            for offset in range(len(whole) + 2):
                rows, total = repo.result_rows_page(s, job_id, limit, offset)
                assert total == len(whole)
                assert _key(rows) == _key(whole[offset : offset + limit]), (limit, offset)
    assert set(ids) == {"a.pdf", "b.pdf", "c.pdf", "d.pdf"}
    for chunk in (1, 3, 2000):  # the streamed rows (output files, the results stream): the same, in order
        with service.sessions() as s, s.begin():
            assert _key(list(repo.stream_result_rows(s, job_id, chunk=chunk))) == _key(whole), chunk
