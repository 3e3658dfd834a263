"""An OpenAI batch's output and error files are streamed from its job's results (jobs.openai.batches):
byte for byte what the builder of whole files made, for a batch of every kind of line, again the same
after a takeover; and written in memory that does not grow with the batch (20,000 requests under
tracemalloc, where the whole-file builder held every line). Real Postgres; S3 and the broker in memory."""

from __future__ import annotations

import hashlib
import io
import json
import tracemalloc
import uuid
from typing import IO, Any

from sqlalchemy import select, text

from jobs.adapters.db import session_factory
from jobs.config import Settings
from jobs.errors import CorruptMedia, EngineError
from jobs.models import Batch
from jobs.openai import format as ob
from jobs.openai.batches import BatchService
from jobs.schemas import ResultLine
from jobs.service import JobService
from tests.fakes import MemoryDispatcher, MemoryStore
from tests.integration.reprocess_fixtures import result

T = "tenant-a"
MIB = 1024 * 1024
N = 20_000  # requests of the big batch
ANSWER = "x" * 1500  # an output line of about 2 KB: the whole output file about 40 MiB
# Streamed, the peak is the spool (8 MiB, copied once as it moves to disk) and a cursor chunk (2,000
# rows): 34 MiB at 20,000 requests and at 40,000. The lists of every line and their bytes: 151 MiB.
PEAK_BOUND = 64 * MIB


class DigestStore(MemoryStore):
    """Once ``digesting``, keeps a streamed file as its size and sha256, read a part at a time: the
    store's copy of a 40 MiB file is not the finalize's memory."""

    def __init__(self, bucket: str) -> None:
        super().__init__(bucket)
        self.digests: dict[str, tuple[int, str]] = {}
        self.digesting = False

    def put_file(self, key: str, f: IO[bytes], content_type: str = "application/octet-stream") -> str:
        if not self.digesting:
            return super().put_file(key, f, content_type)
        h, size = hashlib.sha256(), 0
        while part := f.read(MIB):
            h.update(part)
            size += len(part)
        self.digests[key] = size, h.hexdigest()
        return key


def _batches(settings: Settings, store: MemoryStore) -> BatchService:
    return BatchService(JobService(session_factory(settings), store, MemoryDispatcher(), settings))


def _line(custom_id: str, url: str) -> bytes:
    content = [{"type": "text", "text": "Read it."}, {"type": "image_url", "image_url": {"url": url}}]
    body = {"messages": [{"role": "user", "content": content}]}
    line = {"custom_id": custom_id, "method": "POST", "url": ob.ENDPOINT, "body": body}
    return json.dumps(line, ensure_ascii=False).encode() + b"\n"


def _create(batches: BatchService, data: bytes) -> tuple[str, uuid.UUID]:
    f = batches.upload(T, "in.jsonl", "batch", io.BytesIO(data), len(data))
    batch = batches.create(T, f["id"], ob.ENDPOINT, ob.COMPLETION_WINDOW, None)
    assert batch["status"] == "in_progress", batch
    with batches.sessions() as s:
        job_id = s.scalar(select(Batch.job_id).where(Batch.id == batch["id"]))
    assert job_id is not None
    return batch["id"], job_id


def _old_files(
    batch_id: str, results: list[ResultLine], created: int, rejected: bytes
) -> tuple[bytes, bytes]:
    """The files as _finalize built them before it streamed (74db0d5): every request's pages grouped in
    a dict, every line in a list, the files joined whole. The reference the streamed files must equal."""
    by_request: dict[str, list[ResultLine]] = {}
    for r in results:
        by_request.setdefault(r.custom_id, []).append(r)
    ok: list[dict[str, Any]] = []
    bad: list[dict[str, Any]] = []
    for custom_id, pages in by_request.items():
        failed = next((p for p in pages if p.status == "failed"), None)
        if failed is not None:
            err = failed.error
            code, message = (err.code, err.message) if err else ("server_error", "the request failed")
            bad.append(ob.error_line(batch_id, custom_id, code, message))
        elif all(p.status == "succeeded" for p in pages):
            ok.append(ob.response_line(batch_id, custom_id, pages, created))
        else:
            bad.append(ob.not_run_line(batch_id, custom_id, "batch_cancelled"))
    return ob.jsonl(ok), rejected + ob.jsonl(bad)


def _play(batches: BatchService, job_id: uuid.UUID) -> None:
    """'one page' and 'façade 7' (two pages) succeed, 'unreadable' fails in prep, 'half' has a page
    that failed (a server-side cause: a 500), 'never' waits: the cancel catches it."""
    service = batches.jobs
    with service.sessions() as s:
        rows = s.execute(text("SELECT custom_id, id FROM items WHERE job_id = :j"), {"j": job_id})
        src = {cid: item_id for cid, item_id in rows}
    for cid, pages in (("one page", 1), ("façade 7", 2), ("half", 2)):
        assert service.begin_prep(src[cid]) is not None
        (batch,) = service.finish_prep(src[cid], [(p, f"media/o/{cid}-{p}.png") for p in range(1, pages + 1)])
        units = sorted(service.claim_units(batch), key=lambda u: u.page)
        assert service.complete_units([(units[0], result(answer=f"about {cid}", reasoning="ü"))])
        if pages == 2 and cid == "half":
            service.fail_items([units[1].id], EngineError("CUDA error: out of memory"))
        elif pages == 2:
            assert service.complete_units([(units[1], result(answer="page 2", finish_reason="length"))])
    assert service.begin_prep(src["unreadable"]) is not None
    service.fail_items([src["unreadable"]], CorruptMedia("not a PDF"))


_DIED = "UPDATE batches SET status = 'finalizing', finalizing_at = now() - interval '1 hour' WHERE id = :b"


def test_the_streamed_files_are_the_whole_file_builders_bytes_and_a_takeover_writes_them_again(
    settings: Settings,
) -> None:
    store = MemoryStore(settings.s3.bucket)
    batches, bucket = _batches(settings, store), settings.s3.bucket
    names = ["one page", "façade 7", "unreadable", "half", "never"]
    lines = [_line(n, f"s3://{bucket}/in/{i}.pdf") for i, n in enumerate(names)]
    lines.insert(2, _line("ftp", "ftp://x/y.png"))  # refused by the parser: invalid_image_url
    lines.append(_line("theirs", f"s3://{bucket}/uploads/tenant-b/{'0' * 64}/p.png"))  # forbidden_uri
    batch_id, job_id = _create(batches, b"".join(lines))
    _play(batches, job_id)

    final = batches.cancel(T, batch_id)
    assert final["status"] == "cancelled"
    b = batches._row(T, batch_id)
    assert b.rejected_key is not None
    results = list(batches.jobs.results(None, job_id))
    old_ok, old_bad = _old_files(batch_id, results, final["created_at"], store.get(b.rejected_key))
    files = (final["output_file_id"], final["error_file_id"])
    assert [store.get(f"files/{T}/{f}") for f in files] == [old_ok, old_bad]
    assert [batches.file(T, f)["bytes"] for f in files] == [len(old_ok), len(old_bad)]
    codes = [json.loads(x)["custom_id"] for x in old_bad.splitlines()]
    assert codes == ["ftp", "theirs", "half", "never", "unreadable"]  # refused first, then the job's order
    assert [json.loads(x)["custom_id"] for x in old_ok.splitlines()] == ["façade 7", "one page"]

    for key in [f"files/{T}/{f}" for f in files]:
        store.delete(key)
    with batches.sessions() as s, s.begin():  # its process died while finalizing: the next read redoes it
        s.execute(text(_DIED), {"b": batch_id})
    again = batches.get(T, batch_id)
    assert (again["status"], again["output_file_id"], again["error_file_id"]) == ("cancelled", *files)
    assert [store.get(f"files/{T}/{f}") for f in files] == [old_ok, old_bad]


_COMPLETE = [  # the job's N sources answered as one page each, through the moves the triggers allow
    "UPDATE items SET status = 'preparing' WHERE job_id = :j",
    "UPDATE items SET status = 'prepared', page_count = 1 WHERE job_id = :j",
    """INSERT INTO items (id, job_id, parent_id, custom_id, kind, page, status)
       SELECT gen_random_uuid(), job_id, id, custom_id, 'page', 1, 'succeeded'
       FROM items WHERE job_id = :j AND parent_id IS NULL""",
    """INSERT INTO results (id, job_id, item_id, reasoning, answer, raw_text, finish_reason, truncated,
           answer_missing, prompt_tokens, completion_tokens, model_id, engine, prompt_version)
       SELECT gen_random_uuid(), job_id, id, 'r', :answer, '', 'stop', false, false, 10, 5, 'm', 'test',
           'caption-v1'
       FROM items WHERE job_id = :j AND parent_id IS NOT NULL""",
    "UPDATE items SET status = 'succeeded' WHERE job_id = :j AND parent_id IS NULL",
    "UPDATE jobs SET status = 'running' WHERE id = :j",
    "UPDATE jobs SET status = 'completed', completed_at = now() WHERE id = :j",
]


def test_finalizing_a_batch_of_20000_requests_holds_no_list_of_its_lines(settings: Settings) -> None:
    store = DigestStore(settings.s3.bucket)
    batches = _batches(settings, store)
    data = b"".join(_line(f"req-{i:05d}", f"s3://{settings.s3.bucket}/in/{i}.png") for i in range(N))
    batch_id, job_id = _create(batches, data)
    with batches.sessions() as s, s.begin():
        for stmt in _COMPLETE:
            s.execute(text(stmt), {"j": job_id, "answer": ANSWER})

    store.digesting = True
    tracemalloc.start()
    try:
        final = batches.get(T, batch_id)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert final["status"] == "completed" and final["request_counts"]["completed"] == N
    assert peak < PEAK_BOUND, f"finalizing {N} requests peaked at {peak / MIB:.0f} MiB"
    size, _ = store.digests[f"files/{T}/{final['output_file_id']}"]
    assert size > N * len(ANSWER)  # the file is as big as a list of its lines would be
