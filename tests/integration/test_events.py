"""A job's history: every status move of the job and its items recorded with from and to by Postgres
(migration 0010), read through GET /v1/jobs/{id}/events (the owner only, in pages), and deleted by the
sweeper once past ``queue.event_retention_days`` (the clock moved, on a database of its own)."""

from __future__ import annotations

import uuid

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.cli.history import line
from jobs import clock
from jobs.config import Settings
from jobs.models import Event
from jobs.schemas import JobCreate
from jobs.service import JobService
from jobs.sweeper import sweep
from tests.integration.conftest import service_on

A = {"Authorization": "Bearer test-key"}
B = {"Authorization": "Bearer other-key"}


def _job(client: TestClient, settings: Settings, n: int = 2) -> str:
    items = [
        {"custom_id": f"d{i}", "uri": f"s3://{settings.s3.bucket}/in/{uuid.uuid4().hex}.pdf"}
        for i in range(n)
    ]
    r = client.post("/v1/jobs", json={"items": items}, headers=A)
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def test_every_move_is_recorded_with_from_and_to(client: TestClient, settings: Settings) -> None:
    job_id = _job(client, settings)
    assert client.post(f"/v1/jobs/{job_id}/cancel", headers=A).status_code == 200
    events = client.get(f"/v1/jobs/{job_id}/events", headers=A).json()["data"]
    moves = [(e["kind"], e["custom_id"], e["from_status"], e["to_status"]) for e in events]
    assert moves[0] == ("job.submitted", None, None, "queued")
    assert ("job.status", None, "queued", "cancelling") in moves
    assert ("job.status", None, "cancelling", "cancelled") in moves
    assert {m for m in moves if m[0] == "item.status"} == {
        ("item.status", "d0", "queued", "cancelled"),
        ("item.status", "d1", "queued", "cancelled"),
    }
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    assert "d0" in line(events[-1]) or "job" in line(events[-1])


def test_the_history_is_its_owners_and_comes_in_pages(client: TestClient, settings: Settings) -> None:
    job_id = _job(client, settings, n=3)
    client.post(f"/v1/jobs/{job_id}/cancel", headers=A)
    assert client.get(f"/v1/jobs/{job_id}/events", headers=B).status_code == 404
    first = client.get(f"/v1/jobs/{job_id}/events?limit=2", headers=A).json()
    assert len(first["data"]) == 2 and first["next"] == first["data"][-1]["id"]
    rest = client.get(f"/v1/jobs/{job_id}/events?after={first['next']}", headers=A).json()
    assert rest["next"] is None and rest["data"][0]["id"] > first["next"]


def test_old_history_is_deleted_by_the_sweeper(simulated: Settings) -> None:
    service: JobService = service_on(simulated)
    item = {"custom_id": "old", "uri": f"s3://{simulated.s3.bucket}/uploads/tenant-a/x/doc.pdf"}
    job, _ = service.submit("tenant-a", JobCreate.model_validate({"items": [item]}))
    service.cancel("tenant-a", job.id)
    kept = _count(service, job.id)
    assert kept >= 3
    with service.sessions() as s, s.begin():
        clock.advance(s, simulated, 29 * 86400)
    assert sweep(service).events_deleted == 0 and _count(service, job.id) == kept  # within 30 days
    with service.sessions() as s, s.begin():
        clock.advance(s, simulated, 2 * 86400)
    assert sweep(service).events_deleted >= kept and _count(service, job.id) == 0


def _count(service: JobService, job_id: uuid.UUID) -> int:
    with service.sessions() as s:
        return int(s.scalar(select(func.count()).where(Event.job_id == job_id)) or 0)
