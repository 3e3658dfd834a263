"""Jobs submitted as a source (issue 25), against the running system: an S3 prefix with a glob is listed,
its matching objects run and land in the job's results and its dataset (Parquet and JSONL.gz shards); the
same prefix submitted again with the CLI runs only what is new or changed; a JSONL manifest with a bad
line fails that line alone. Every test lists a prefix of its own, so no test sees another's objects."""

from __future__ import annotations

import gzip
import io
import json
import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pymupdf
import pytest

from tests.e2e.test_cli import vlmq
from tests.e2e.test_pipeline import KEY, results_by_custom_id, s3_client, wait_done
from tests.fixtures.models import taught_pdf

pytestmark = pytest.mark.slow

# The taught model's answers to the first two pages of taught_pdf(), each made a PDF of its own:
# one page per object keeps the CPU inference short, and two looks give two ETags and two answers.
TITLE, BILL = "Quarterly report", "Total 42"


def one_page_pdf(page: int) -> bytes:
    doc = pymupdf.open(stream=taught_pdf(), filetype="pdf")
    doc.select([page])
    data: bytes = doc.tobytes(garbage=3, deflate=True, no_new_id=True)
    doc.close()
    return data


def put(env: dict[str, str], key: str, data: bytes) -> str:
    s3_client(env).put_object(Bucket=env["VLMQ_S3__BUCKET"], Key=key, Body=data)
    return f"s3://{env['VLMQ_S3__BUCKET']}/{key}"


def new_prefix(env: dict[str, str]) -> tuple[str, str]:
    """A key prefix of the test's own, and its s3:// URI (with no trailing slash)."""
    root = f"sources/{uuid.uuid4().hex}"
    return root, f"s3://{env['VLMQ_S3__BUCKET']}/{root}"


def submit(base: str, body: dict[str, Any]) -> str:
    r = httpx.post(f"{base}/v1/jobs", json=body, headers=KEY, timeout=30)
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def dataset(base: str, job_id: str) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """The job's dataset manifest, and its rows as read from the Parquet shards and from the JSONL.gz ones."""

    def get(name: str) -> httpx.Response:
        return httpx.get(f"{base}/v1/jobs/{job_id}/dataset{name}", headers=KEY, timeout=30)

    r = get("")
    assert r.status_code == 200, r.text
    manifest = r.json()
    parquet: list[dict[str, Any]] = []
    jsonl: list[dict[str, Any]] = []
    for shard in manifest["shards"]:
        table = pq.read_table(io.BytesIO(get(f"/{shard['parquet']}").content))
        assert table.num_rows == shard["rows"]
        parquet += table.to_pylist()
        text = gzip.decompress(get(f"/{shard['jsonl_gz']}").content).decode()
        jsonl += [json.loads(line) for line in text.splitlines()]
    return manifest, parquet, jsonl


def by_row(rows: list[dict[str, Any]]) -> dict[tuple[str, int | None], dict[str, Any]]:
    keyed = {(r["custom_id"], r["page"]): r for r in rows}
    assert len(keyed) == len(rows), rows  # one row per (item, page)
    return keyed


def test_prefix_job_lists_runs_and_writes_a_dataset(running_system: str, e2e_env: dict[str, str]) -> None:
    root, uri = new_prefix(e2e_env)
    looks = {"a.pdf": 0, "x/b.pdf": 1, "x/y/c.pdf": 0, "x/y/d.pdf": 1, "z/e.pdf": 0}
    for name, page in looks.items():
        put(e2e_env, f"{root}/{name}", one_page_pdf(page))
    put(e2e_env, f"{root}/x/notes.txt", b"not a PDF, and not matched")
    put(e2e_env, f"{root}/x/old.pdf.bak", one_page_pdf(0))
    put(e2e_env, f"{root}-sibling/f.pdf", one_page_pdf(0))  # beside the prefix, not under it

    job = wait_done(running_system, submit(running_system, {"source": {"prefix": f"{uri}/**/*.pdf"}}))

    assert job["status"] == "completed", job
    assert job["request_counts"] == {"total": 5, "completed": 5, "failed": 0, "cancelled": 0, "expired": 0}
    listing = job["listing"]
    assert (listing["kind"], listing["uri"], listing["status"]) == ("prefix", f"{uri}/**/*.pdf", "done")
    assert (listing["discovered"], listing["skipped"], listing["error"]) == (5, 0, None)
    assert listing["pages"] >= 1

    results = results_by_custom_id(running_system, job["id"])
    keys = {f"{root}/{name}" for name in looks}
    assert set(results) == keys  # custom_id: the object's key
    for name, page in looks.items():
        [line] = results[f"{root}/{name}"]
        assert (line["status"], line["page"], line["answer"]) == ("succeeded", 1, (TITLE, BILL)[page])

    manifest, parquet, jsonl = dataset(running_system, job["id"])
    assert manifest["format"] == "vlmq-dataset" and manifest["rows"] == 5
    assert {c["name"] for c in manifest["columns"]} >= {"custom_id", "source_uri", "page", "status", "answer"}
    rows = by_row(parquet)
    assert set(rows) == {(k, 1) for k in keys}  # one row per result line
    for (key, _), row in rows.items():
        [line] = results[key]
        assert row["source_uri"] == f"s3://{e2e_env['VLMQ_S3__BUCKET']}/{key}"
        assert (row["status"], row["answer"], row["reasoning"]) == (
            line["status"], line["answer"], line["reasoning"],
        )  # fmt: skip
        assert row["answer"] and row["completion_tokens"] > 0 and row["error_code"] is None
    assert by_row(jsonl) == rows  # the JSONL.gz shards hold the same rows as the Parquet ones


def test_resubmitted_prefix_runs_only_new_and_changed_objects(
    running_system: str, e2e_env: dict[str, str], tmp_path: Path
) -> None:
    root, uri = new_prefix(e2e_env)
    for name in ("a.pdf", "b.pdf", "sub/c.pdf", "sub/d.pdf"):
        put(e2e_env, f"{root}/{name}", one_page_pdf(0))
    pattern = f"{uri}/**/*.pdf"
    first = wait_done(running_system, submit(running_system, {"source": {"prefix": pattern}}))
    assert first["status"] == "completed" and first["request_counts"]["completed"] == 4, first

    put(e2e_env, f"{root}/sub/new.pdf", one_page_pdf(0))  # a new object
    put(e2e_env, f"{root}/a.pdf", one_page_pdf(1))  # an object changed since: a new ETag

    export = f"s3://{e2e_env['VLMQ_S3__BUCKET']}/exports/{uuid.uuid4().hex}/"  # the dataset there too
    cli = vlmq(
        e2e_env, running_system, tmp_path, "submit", "--prefix", pattern, "--dataset-to", export, "--wait"
    )
    print(cli.stdout)  # what a user saw: shown by pytest -s and on failure
    assert cli.returncode == 0, cli.stdout + cli.stderr
    found = re.search(r"job ([0-9a-f-]{36})", cli.stdout)
    assert found and found.group(1) != first["id"], cli.stdout
    assert re.search(r"documents .*? 2/2 +0 failed .*completed done: 5 found, 3 skipped", cli.stdout)
    second = wait_done(running_system, found.group(1))  # ended already: --wait followed it to the end
    assert second["status"] == "completed", second
    assert second["request_counts"] == {"total": 2, "completed": 2, "failed": 0, "cancelled": 0, "expired": 0}
    listing = second["listing"]
    assert (listing["status"], listing["discovered"], listing["skipped"]) == ("done", 5, 3)

    results = results_by_custom_id(running_system, second["id"])
    assert set(results) == {f"{root}/a.pdf", f"{root}/sub/new.pdf"}
    assert [x["answer"] for x in results[f"{root}/a.pdf"]] == [BILL]  # the new content, not the old
    assert [x["answer"] for x in results[f"{root}/sub/new.pdf"]] == [TITLE]
    assert second["dataset"]["prefix"] == export and second["dataset"]["error"] is None, second["dataset"]
    written = s3_client(e2e_env).get_object(
        Bucket=e2e_env["VLMQ_S3__BUCKET"], Key=export.split("/", 3)[3] + "manifest.json"
    )
    assert json.loads(written["Body"].read())["rows"] == 2  # the CLI's --dataset-to reached the job

    again = vlmq(e2e_env, running_system, tmp_path, "submit", "--prefix", pattern, "--no-incremental")
    assert again.returncode == 0, again.stdout + again.stderr
    found = re.search(r"job ([0-9a-f-]{36})", again.stdout)
    assert found, again.stdout
    third = wait_done(running_system, found.group(1))
    assert third["status"] == "completed" and third["request_counts"]["total"] == 5, third
    assert (third["listing"]["discovered"], third["listing"]["skipped"]) == (5, 0)


def test_manifest_job_fails_its_bad_line_alone(running_system: str, e2e_env: dict[str, str]) -> None:
    root, _ = new_prefix(e2e_env)
    docs = [
        put(e2e_env, f"{root}/docs/{n}.pdf", one_page_pdf(p))
        for n, p in (("one", 0), ("two", 1), ("three", 0))
    ]
    lines = [
        json.dumps({"uri": docs[0], "custom_id": "first"}),
        json.dumps({"uri": docs[1]}),
        "this line is not JSON",
        json.dumps({"uri": docs[2], "custom_id": "third"}),
    ]
    manifest_uri = put(e2e_env, f"{root}/list.jsonl", ("\n".join(lines) + "\n").encode())

    job = wait_done(running_system, submit(running_system, {"source": {"manifest": manifest_uri}}))

    assert job["status"] == "completed", job
    assert job["request_counts"] == {"total": 4, "completed": 3, "failed": 1, "cancelled": 0, "expired": 0}
    listing = job["listing"]
    assert (listing["kind"], listing["status"], listing["discovered"], listing["skipped"]) == (
        "manifest", "done", 4, 0,
    )  # fmt: skip

    results = results_by_custom_id(running_system, job["id"])
    assert set(results) == {"first", f"{root}/docs/two.pdf", "line-3", "third"}
    answers = {cid: [x["answer"] for x in lines] for cid, lines in results.items() if cid != "line-3"}
    assert answers == {"first": [TITLE], f"{root}/docs/two.pdf": [BILL], "third": [TITLE]}
    [bad] = results["line-3"]
    assert bad["status"] == "failed" and bad["error"]["code"] == "invalid_manifest_line", bad
    assert "line 3" in bad["error"]["message"]

    manifest, parquet, jsonl = dataset(running_system, job["id"])
    assert manifest["rows"] == 4 and len(parquet) == 4
    rows = by_row(parquet)
    assert rows[("line-3", None)]["error_code"] == "invalid_manifest_line"
    assert rows[("line-3", None)]["answer"] is None
    assert rows[("first", 1)]["source_uri"] == docs[0]
    assert by_row(jsonl) == rows
