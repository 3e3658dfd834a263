"""A job's results as a dataset (jobs.views.datasets) through the API: written when the job ends, read
back with pyarrow, the same lines as the results stream; another tenant's is not found, nor is a name
that is not a shard."""

from __future__ import annotations

import io
import json
import uuid

import pyarrow.parquet as pq
import sqlalchemy as sql
from fastapi.testclient import TestClient

from jobs.config import Settings
from jobs.errors import CorruptMedia
from jobs.models import Item
from jobs.service import build_service

A = {"Authorization": "Bearer test-key"}
B = {"Authorization": "Bearer other-key"}


def test_a_finished_jobs_dataset_reads_back_with_pyarrow(client: TestClient, settings: Settings) -> None:
    bucket = settings.s3.bucket
    items = [{"custom_id": f"d{i}", "uri": f"s3://{bucket}/in/{uuid.uuid4().hex}.pdf"} for i in range(3)]
    job_id = uuid.UUID(client.post("/v1/jobs", json={"items": items}, headers=A).json()["id"])
    assert client.get(f"/v1/jobs/{job_id}/dataset", headers=A).status_code == 404  # not written yet
    service = build_service(settings)
    with service.sessions() as s:
        ids = list(s.scalars(sql.select(Item.id).where(Item.job_id == job_id)))
    for item_id in ids:
        assert service.begin_prep(item_id) is not None
        service.fail_items([item_id], CorruptMedia("truncated"))
    assert service.finalize(job_id)

    manifest = client.get(f"/v1/jobs/{job_id}/dataset", headers=A).json()
    assert (manifest["format"], manifest["rows"], len(manifest["shards"])) == ("vlmq-dataset", 3, 1)
    shard = client.get(f"/v1/jobs/{job_id}/dataset/{manifest['shards'][0]['parquet']}", headers=A)
    assert shard.status_code == 200 and shard.headers["content-type"] == "application/vnd.apache.parquet"
    rows = pq.read_table(io.BytesIO(shard.content)).to_pylist()
    lines = [json.loads(x) for x in client.get(f"/v1/jobs/{job_id}/results", headers=A).text.splitlines()]
    assert sorted(x["custom_id"] for x in lines) == sorted(r["custom_id"] for r in rows)  # the same lines
    assert sorted((r["custom_id"], r["status"], r["error_code"]) for r in rows) == [
        (f"d{i}", "failed", "corrupt_media") for i in range(3)
    ]
    assert {r["source_uri"] for r in rows} == {it["uri"] for it in items}

    assert client.get(f"/v1/jobs/{job_id}/dataset", headers=B).status_code == 404  # another tenant's
    for name in ("../output.jsonl", "manifest.jsonx", "part-1.parquet", "part-00009.parquet"):
        assert client.get(f"/v1/jobs/{job_id}/dataset/{name}", headers=A).status_code == 404, name
