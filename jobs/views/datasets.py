"""A job's results as a sharded dataset, beside output.jsonl: the same result lines (jobs.views.lines), one
row each, flattened to fixed columns so they load without vlmq. Each shard is written twice, as Parquet
(pyarrow, pandas, duckdb, Hugging Face ``datasets``, Spark) and as gzipped JSON lines (anything with gzip
and a JSON parser); manifest.json lists the shards and the columns.

Memory holds one shard of rows at most: a shard is written as soon as it is full. Keys are deterministic
(part-00000.parquet, ...), so a rewrite overwrites in place and then deletes what an earlier, larger
dataset left behind: what lies under the prefix is exactly what the manifest names.
"""

from __future__ import annotations

import gzip
import json
import re
import uuid
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from jobs.adapters.storage import BlobStore, job_output_key
from jobs.errors import InvalidInput, NotFound
from jobs.schemas import ResultLine

FORMAT, VERSION = "vlmq-dataset", 1
PARQUET_TYPE, GZIP_TYPE = "application/vnd.apache.parquet", "application/gzip"
# One schema for every shard, typed explicitly: inferred types would differ between a shard of failures
# (all-null answer columns) and one of results, and readers refuse to concatenate those.
SCHEMA = pa.schema(
    [("custom_id", pa.string()), ("source_uri", pa.string()), ("page", pa.int32()), ("status", pa.string())]
    + [(name, pa.string()) for name in ("answer", "reasoning")]
    + [("flags", pa.list_(pa.string())), ("boxes", pa.list_(pa.string())), ("finish_reason", pa.string())]
    + [("truncated", pa.bool_()), ("prompt_tokens", pa.int32()), ("completion_tokens", pa.int32())]
    + [(name, pa.string()) for name in ("model_id", "model_revision", "prompt_version")]
    + [("version", pa.int32()), ("settings_hash", pa.string())]
    + [("error_code", pa.string()), ("error_message", pa.string())]
)
# zstd packs text tighter; a pyarrow built without it still writes a file every reader takes.
COMPRESSION = "zstd" if pa.Codec.is_available("zstd") else "snappy"


SHARD_NAME = re.compile(r"part-\d{5}\.(parquet|jsonl\.gz)")


class ShardStore(Protocol):
    """What a dataset is written through: the server's store (its bucket), or a destination's
    (jobs.adapters.buckets, a bucket of the tenant's)."""

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str: ...

    def get(self, key: str) -> bytes: ...

    def delete(self, key: str) -> None: ...


def dataset_prefix(job_id: uuid.UUID) -> str:
    return job_output_key(job_id, "dataset/")


def read(store: BlobStore, job_id: uuid.UUID, name: str = "manifest.json") -> tuple[bytes, str]:
    """A file of a job's dataset and its content type, for GET /v1/jobs/{id}/dataset[/name]: the
    manifest, or a shard it names. The caller has checked the job is the tenant's."""
    if name != "manifest.json" and not SHARD_NAME.fullmatch(name):
        raise NotFound(f"no dataset file {name!r}: the manifest names the shards (part-NNNNN.parquet, ...)")
    try:
        data = store.get(dataset_prefix(job_id) + name)
    except (InvalidInput, KeyError) as e:
        raise NotFound(
            f"job {job_id} has no dataset file {name!r} yet: it is written when the job ends"
        ) from e
    kind = (
        "application/json"
        if name.endswith(".json")
        else PARQUET_TYPE
        if name.endswith(".parquet")
        else GZIP_TYPE
    )
    return data, kind


def row(line: ResultLine, source_uri: str | None) -> dict[str, Any]:
    """One row of SCHEMA, keys in its order; None where the line has no value."""
    usage, error = line.usage, line.error
    return {
        "custom_id": line.custom_id, "source_uri": source_uri, "page": line.page,
        "status": line.status.value, "answer": line.answer, "reasoning": line.reasoning,
        "flags": list(line.flags), "boxes": list(line.boxes), "finish_reason": line.finish_reason,
        "truncated": line.truncated,
        "prompt_tokens": usage.prompt_tokens if usage else None,
        "completion_tokens": usage.completion_tokens if usage else None,
        "model_id": line.model_id, "model_revision": line.model_revision,
        "prompt_version": line.prompt_version, "version": line.version,
        "settings_hash": line.settings_hash,
        "error_code": error.code if error else None, "error_message": error.message if error else None,
    }  # fmt: skip


def parquet_bytes(rows: list[dict[str, Any]]) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), sink, compression=COMPRESSION)
    return bytes(sink.getvalue().to_pybytes())


def jsonl_gz_bytes(rows: list[dict[str, Any]]) -> bytes:
    text = "".join(json.dumps(r) + "\n" for r in rows)
    return gzip.compress(text.encode(), mtime=0)  # mtime 0: the same rows give the same bytes


class DatasetWriter:
    """Rows in, shards out: ``add`` each line, then ``finish`` once for the manifest."""

    def __init__(self, store: ShardStore, prefix: str, rows_per_shard: int = 10_000) -> None:
        if rows_per_shard < 1:
            raise ValueError(f"rows_per_shard must be at least 1, not {rows_per_shard}")
        self.store, self.rows_per_shard = store, rows_per_shard
        # "" is a bucket's root (a destination may be a whole bucket); any other prefix is a folder.
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self.shards: list[dict[str, Any]] = []
        self._rows: list[dict[str, Any]] = []

    @property
    def buffered(self) -> int:
        """Rows held in memory, not yet in a shard: never more than rows_per_shard."""
        return len(self._rows)

    def add(self, line: ResultLine, source_uri: str | None = None) -> None:
        self._rows.append(row(line, source_uri))
        if len(self._rows) >= self.rows_per_shard:
            self._flush()

    def finish(self) -> dict[str, Any]:
        if self._rows:
            self._flush()
        manifest = self.manifest()
        self._delete_stale({s[k] for s in self.shards for k in ("parquet", "jsonl_gz")})
        self.store.put(
            self.prefix + "manifest.json", json.dumps(manifest, indent=2).encode(), "application/json"
        )
        return manifest

    def manifest(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "version": VERSION, "rows": sum(s["rows"] for s in self.shards),
            "rows_per_shard": self.rows_per_shard,
            "columns": [{"name": f.name, "type": str(f.type)} for f in SCHEMA],
            "shards": list(self.shards),
        }  # fmt: skip

    def _flush(self) -> None:
        """Shard names are relative to the manifest, so a copied dataset folder still reads."""
        name = f"part-{len(self.shards):05d}"
        parquet, jsonl_gz = f"{name}.parquet", f"{name}.jsonl.gz"
        self.store.put(self.prefix + parquet, parquet_bytes(self._rows), PARQUET_TYPE)
        self.store.put(self.prefix + jsonl_gz, jsonl_gz_bytes(self._rows), GZIP_TYPE)
        self.shards.append({"parquet": parquet, "jsonl_gz": jsonl_gz, "rows": len(self._rows)})
        self._rows = []

    def _delete_stale(self, keep: set[str]) -> None:
        """Delete the shards the previous manifest named and this one does not. Done before the new
        manifest is written: a retry after a crash here still finds the old one and finishes the job."""
        for shard in self._previous_shards():
            for key in (shard.get("parquet"), shard.get("jsonl_gz")):
                # Only a shard's name: a manifest.json at a tenant's destination may be anyone's, and
                # must not make this delete an object it happens to name.
                if isinstance(key, str) and SHARD_NAME.fullmatch(key) and key not in keep:
                    self.store.delete(self.prefix + key)

    def _previous_shards(self) -> list[dict[str, Any]]:
        try:
            old = json.loads(self.store.get(self.prefix + "manifest.json"))
        except (InvalidInput, KeyError):  # none yet: S3 says InvalidInput, the in-memory store KeyError
            return []
        except ValueError:  # not JSON: not a manifest of ours (a destination's may be anything)
            return []
        shards = old.get("shards") if isinstance(old, dict) else None
        return [x for x in shards if isinstance(x, dict)] if isinstance(shards, list) else []
