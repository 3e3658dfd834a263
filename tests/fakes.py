"""Fakes at I/O seams: an engine that answers from a function and records what it was asked; a blob store
in memory; a dispatcher that keeps its messages in memory (as Dramatiq's StubBroker), for tests that run
the service without Redis."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import IO

from workers.inference.engine import GenerationOutput, GenerationRequest


class FakeEngine:
    name = "fake"
    model_id = "fake-model"

    def __init__(self, answer: Callable[[GenerationRequest], str]) -> None:
        self.answer = answer
        self.requests: list[GenerationRequest] = []

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        self.requests.extend(requests)
        return [GenerationOutput(r.request_id, self.answer(r), 100, 10, "stop") for r in requests]


class MemoryStore:
    """A BlobStore in memory; ``fail`` may raise for a key (an S3 outage at that object)."""

    def __init__(self, bucket: str = "vlmq", fail: Callable[[str], Exception | None] | None = None) -> None:
        self.bucket = bucket
        self.objects: dict[str, bytes] = {}
        self.fail = fail

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        error = self.fail(key) if self.fail else None
        if error is not None:
            raise error
        self.objects[key] = data
        return key

    def get(self, key: str) -> bytes:
        return self.objects[key]

    def get_start(self, key: str, n: int) -> bytes:
        return self.get(key)[:n]

    def read_uri(self, uri: str, max_bytes: int) -> bytes:
        return self.get(uri.split("/", 3)[3])

    def put_file(self, key: str, f: IO[bytes], content_type: str = "application/octet-stream") -> str:
        return self.put(key, f.read(), content_type)

    def delete(self, key: str) -> None:
        self.objects.pop(key, None)


class MemoryDispatcher:
    """jobs.adapters.dispatch.Dispatcher (and the reprocessing one) in memory: each message sent is kept,
    in order, as (task, ids, priority or run id); ``take`` empties the queue of one task."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list[uuid.UUID], str]] = []

    def prep(self, item_id: uuid.UUID, priority: str = "normal") -> None:
        self.sent.append(("prep", [item_id], priority))

    def infer(self, unit_ids: Sequence[uuid.UUID], priority: str = "normal") -> None:
        self.sent.append(("infer", list(unit_ids), priority))

    def list_source(self, job_id: uuid.UUID, delay: float = 0.0) -> None:
        self.sent.append(("list", [job_id], str(delay)))

    def refresh(self, run_id: uuid.UUID, unit_ids: Sequence[uuid.UUID]) -> None:
        self.sent.append(("refresh", list(unit_ids), str(run_id)))

    def reprocess_scheduled(self, slot: datetime) -> None:
        self.sent.append(("reprocess_scheduled", [], slot.isoformat()))

    def take(self, task: str) -> list[uuid.UUID]:
        ids = [i for t, batch, _ in self.sent if t == task for i in batch]
        self.sent = [m for m in self.sent if m[0] != task]
        return ids
