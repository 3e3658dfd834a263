"""A one-PDF job submitted through the real API and prepared by the real prep code, for tests that then
drive inference by hand (tests/integration/test_batch_store.py, test_writers.py)."""

from __future__ import annotations

import uuid

from fastapi.testclient import TestClient
from sqlalchemy import select

from jobs.models import Item
from tests.fixtures.make_fixtures import text_pdf
from workers import prep
from workers.context import WorkerContext

AUTH = {"Authorization": "Bearer test-key"}


def prepared_pdf(
    client: TestClient, ctx: WorkerContext, name: str, pages: int, prompt: str | None = None
) -> uuid.UUID:
    """Upload a ``pages``-page PDF as a job (with the user's own ``prompt``, if given), prepare its
    source; the job's id."""
    files = [("file", (f"{name}.pdf", text_pdf(pages, name), "application/pdf"))]
    r = client.post("/v1/jobs", headers=AUTH, files=files, data={"prompt": prompt} if prompt else None)
    assert r.status_code == 202, r.text
    job_id = uuid.UUID(r.json()["id"])
    with ctx.service.sessions() as s:
        (source,) = s.scalars(select(Item.id).where(Item.job_id == job_id, Item.parent_id.is_(None)))
    prep.prepare(ctx, source)
    return job_id


def page_units(ctx: WorkerContext, job_id: uuid.UUID) -> list[Item]:
    """The job's page units, in page order."""
    with ctx.service.sessions() as s:
        q = select(Item).where(Item.job_id == job_id, Item.parent_id.is_not(None)).order_by(Item.page)
        return list(s.scalars(q))
