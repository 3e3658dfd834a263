"""jobs.views.datasets: a job's result lines as Parquet and JSONL.gz shards with a manifest, in the
in-memory blob store; read back with pyarrow and gzip + json, as a user without vlmq would."""

from __future__ import annotations

import gzip
import io
import json
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from jobs.errors import InvalidInput
from jobs.schemas import ErrorInfo, ResultLine, Usage
from jobs.status import Outcome
from jobs.views.datasets import SCHEMA, DatasetWriter, dataset_prefix
from tests.fakes import MemoryStore

PREFIX = "jobs/j1/dataset/"


class S3LikeStore(MemoryStore):
    """As S3BlobStore: a missing key raises InvalidInput (MemoryStore raises KeyError); records types."""

    def __init__(self) -> None:
        super().__init__()
        self.types: dict[str, str] = {}
        self.puts: list[str] = []

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        self.types[key] = content_type
        self.puts.append(key)
        return super().put(key, data, content_type)

    def get(self, key: str) -> bytes:
        if key not in self.objects:
            raise InvalidInput(f"s3://{self.bucket}/{key} does not exist")
        return super().get(key)


def ok(custom_id: str, page: int = 1) -> ResultLine:
    return ResultLine(
        custom_id=custom_id, page=page, status=Outcome.SUCCEEDED, answer=f"answer {custom_id}",
        reasoning="because", boxes=["a box"], finish_reason="stop", truncated=False, flags=["fallback"],
        usage=Usage(prompt_tokens=120, completion_tokens=30, total_tokens=150), model_id="glm",
        model_revision="rev1", prompt_version="caption@3", version=2, settings_hash="h1",
    )  # fmt: skip


def failed(custom_id: str) -> ResultLine:
    error = ErrorInfo(code="corrupt_media", message="not a PDF")
    return ResultLine(custom_id=custom_id, page=None, status=Outcome.FAILED, error=error)


def write(store: MemoryStore, lines: list[ResultLine], rows_per_shard: int = 3) -> dict[str, Any]:
    writer = DatasetWriter(store, PREFIX, rows_per_shard=rows_per_shard)
    for line in lines:
        writer.add(line, f"s3://in/{line.custom_id}.pdf")
    return writer.finish()


def parquet_rows(store: MemoryStore, name: str) -> pa.Table:
    """A shard by its name in the manifest (relative to it) or by its key."""
    key = name if name.startswith(PREFIX) else PREFIX + name
    return pq.read_table(io.BytesIO(store.objects[key]))


def jsonl_rows(store: MemoryStore, name: str) -> list[dict[str, Any]]:
    key = name if name.startswith(PREFIX) else PREFIX + name
    return [json.loads(s) for s in gzip.decompress(store.objects[key]).decode().splitlines()]


def under_prefix(store: MemoryStore) -> set[str]:
    return {k for k in store.objects if k.startswith(PREFIX)}


def test_a_result_round_trips_through_parquet_with_its_types() -> None:
    store = MemoryStore()
    manifest = write(store, [ok("a", page=4)])
    table = parquet_rows(store, manifest["shards"][0]["parquet"])
    assert table.schema.equals(SCHEMA)
    assert (
        table.schema.field("page").type == pa.int32() and table.schema.field("truncated").type == pa.bool_()
    )
    assert table.to_pylist() == [{
        "custom_id": "a", "source_uri": "s3://in/a.pdf", "page": 4, "status": "succeeded",
        "answer": "answer a", "reasoning": "because", "flags": ["fallback"], "boxes": ["a box"],
        "finish_reason": "stop", "truncated": False, "prompt_tokens": 120, "completion_tokens": 30,
        "model_id": "glm", "model_revision": "rev1", "prompt_version": "caption@3", "version": 2,
        "settings_hash": "h1", "error_code": None, "error_message": None,
    }]  # fmt: skip


def test_the_jsonl_gz_rows_hold_the_same_keys_and_values_as_the_parquet_rows() -> None:
    store = MemoryStore()
    shard = write(store, [ok("a"), failed("b")])["shards"][0]
    rows = jsonl_rows(store, shard["jsonl_gz"])
    assert rows == parquet_rows(store, shard["parquet"]).to_pylist()
    assert list(rows[0]) == SCHEMA.names and rows[0]["flags"] == ["fallback"]


def test_a_failed_line_fills_the_error_columns_and_leaves_the_answer_null() -> None:
    store = MemoryStore()
    shard = write(store, [failed("b")])["shards"][0]
    [r] = parquet_rows(store, shard["parquet"]).to_pylist()
    assert (r["status"], r["error_code"], r["error_message"]) == ("failed", "corrupt_media", "not a PDF")
    assert r["answer"] is None and r["page"] is None and r["prompt_tokens"] is None and r["flags"] == []


def test_seven_rows_in_shards_of_three_make_three_shards_of_3_3_1() -> None:
    store = MemoryStore()
    manifest = write(store, [ok(str(i)) for i in range(7)])
    assert [s["rows"] for s in manifest["shards"]] == [3, 3, 1] and manifest["rows"] == 7
    assert manifest["shards"][2] == {
        "parquet": "part-00002.parquet", "jsonl_gz": "part-00002.jsonl.gz", "rows": 1
    }  # fmt: skip
    assert json.loads(store.objects[f"{PREFIX}manifest.json"]) == manifest
    assert manifest["format"] == "vlmq-dataset" and manifest["version"] == 1
    assert manifest["rows_per_shard"] == 3 and manifest["columns"][2] == {"name": "page", "type": "int32"}


def test_zero_rows_write_no_shard_and_an_empty_manifest() -> None:
    store = MemoryStore()
    manifest = write(store, [])
    assert manifest["rows"] == 0 and manifest["shards"] == []
    assert under_prefix(store) == {f"{PREFIX}manifest.json"}


def test_a_rewrite_with_fewer_rows_deletes_the_stale_shards() -> None:
    store = S3LikeStore()  # the first write finds no manifest: S3's InvalidInput, not KeyError
    write(store, [ok(str(i)) for i in range(7)])
    manifest = write(store, [ok("x"), failed("y")])
    named = {PREFIX + s[k] for s in manifest["shards"] for k in ("parquet", "jsonl_gz")}
    assert under_prefix(store) == named | {f"{PREFIX}manifest.json"} and len(named) == 2
    assert [r["custom_id"] for r in parquet_rows(store, f"{PREFIX}part-00000.parquet").to_pylist()] == [
        "x",
        "y",
    ]


def test_a_shard_is_written_when_full_so_memory_holds_one_shard_at_most() -> None:
    store = S3LikeStore()
    writer = DatasetWriter(store, PREFIX, rows_per_shard=3)
    for i in range(3):
        writer.add(ok(str(i)))
    assert writer.buffered == 0 and store.puts == [
        f"{PREFIX}part-00000.parquet",
        f"{PREFIX}part-00000.jsonl.gz",
    ]
    writer.add(ok("3"))
    assert writer.buffered == 1 and len(store.puts) == 2


def test_shards_are_stored_with_their_content_types() -> None:
    store = S3LikeStore()
    write(store, [ok("a")])
    assert store.types[f"{PREFIX}part-00000.parquet"] == "application/vnd.apache.parquet"
    assert store.types[f"{PREFIX}part-00000.jsonl.gz"] == "application/gzip"
    assert store.types[f"{PREFIX}manifest.json"] == "application/json"


def test_every_shard_has_the_same_schema_so_a_reader_takes_them_as_one_dataset(tmp_path: Path) -> None:
    """A shard of failures only (all answers null) must not get other column types than one of results."""
    store = MemoryStore()
    manifest = write(store, [ok("a"), ok("b"), failed("c"), failed("d")], rows_per_shard=2)
    paths = []
    for shard in manifest["shards"]:
        path = tmp_path / shard["parquet"]  # names are relative: the folder copied elsewhere still reads
        path.write_bytes(store.objects[PREFIX + shard["parquet"]])
        assert pq.read_schema(path).equals(SCHEMA)
        paths.append(str(path))
    table = ds.dataset(paths, format="parquet").to_table()
    assert table.column("error_code").to_pylist() == [None, None, "corrupt_media", "corrupt_media"]


def test_the_same_rows_give_the_same_bytes() -> None:
    first, second = MemoryStore(), MemoryStore()
    write(first, [ok("a"), failed("b")])
    write(second, [ok("a"), failed("b")])
    assert first.objects == second.objects


def test_a_shard_holds_at_least_one_row() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        DatasetWriter(MemoryStore(), PREFIX, rows_per_shard=0)


def test_a_jobs_dataset_lies_under_its_output_prefix() -> None:
    job_id = uuid.UUID(int=1)
    assert dataset_prefix(job_id) == f"jobs/{job_id}/dataset/"
