"""The OpenAI Batch user: uploads a JSONL file of chat completion requests (s3:// images of its granted
bucket, inline data: images, now and then a line naming a server prefix, which must be refused alone),
creates a batch, follows it to its end, and reads its output and error files: their lines must be the
batch's request_counts. Some batches are cancelled on the way."""

from __future__ import annotations

import base64
import json
import random
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tests.soak.clients import TERMINAL, Api, JobRecord, Ledger
from tests.soak.config import DAY, SoakConfig
from tests.soak.inputs import Corpus

SHARE = 0.08  # of the run's items (a line: 1 source and its page)
P_CANCEL, P_INLINE, P_BAD = 0.15, 0.25, 0.05
ENDPOINT = "/v1/chat/completions"


@dataclass
class BatchRecord:
    id: str
    lines: int
    status: str = "validating"
    cancel: bool = False
    checked: bool = False


class OpenAIUser:
    name = "openai"

    def __init__(self, api: Api, corpus: Corpus, ledger: Ledger, cfg: SoakConfig, rng: random.Random):
        self.api, self.corpus, self.ledger, self.rng = api, corpus, ledger, rng
        slots = max(1, round(cfg.days * cfg.batches_per_day))
        self.lines = max(3, round(SHARE * cfg.items / 2 / slots))
        self.plan = sorted(rng.uniform(0, cfg.days * DAY * 0.9) for _ in range(slots))
        self.file_id: str | None = None  # uploaded, batch not created yet (a fault between the two)
        self.batches: dict[str, BatchRecord] = {}

    def tick(self, now: datetime, elapsed: float, submitting: bool) -> None:
        if self.file_id is not None or (submitting and self.plan and self.plan[0] <= elapsed):
            self._create(now)
        for b in self.batches.values():
            if not b.checked:
                self._follow(b, now, submitting)

    def _create(self, now: datetime) -> None:
        if self.file_id is None:
            data = "".join(self._line(i) + "\n" for i in range(self.lines)).encode()
            f = self.api.ok("POST", "/v1/files", files={"file": ("requests.jsonl", data)},
                            data={"purpose": "batch"})  # fmt: skip
            if f is None:
                return
            self.plan.pop(0)
            self.file_id = f["id"]
        body = {"input_file_id": self.file_id, "endpoint": ENDPOINT, "completion_window": "24h"}
        b = self.api.ok("POST", "/v1/batches", json=body)
        if b is None:
            return
        self.file_id = None
        rec = BatchRecord(b["id"], self.lines, b["status"], cancel=self.rng.random() < P_CANCEL)
        self.batches[rec.id] = rec
        self._record_job(rec, now)

    def _line(self, i: int) -> str:
        roll = self.rng.random()
        if roll < P_BAD:
            url = f"s3://{self.corpus.stack.bucket}/results/not-yours.png"  # a server prefix: refused
        elif roll < P_BAD + P_INLINE:
            url = "data:image/png;base64," + base64.b64encode(self.corpus.image_bytes()).decode()
        else:
            url = self.corpus.image()
        parts = [
            {"type": "text", "text": "Describe this image."},
            {"type": "image_url", "image_url": {"url": url}},
        ]
        body = {"model": "glm-4.1v", "messages": [{"role": "user", "content": parts}], "max_tokens": 1024}
        return json.dumps({"custom_id": f"line-{i}", "method": "POST", "url": ENDPOINT, "body": body})

    def _record_job(self, rec: BatchRecord, now: datetime) -> None:
        """The batch's job, from Postgres' point of view: the ledger knows it by the batch id."""
        self.ledger.add(JobRecord(f"batch:{rec.id}", self.name, "openai", rec.lines, now, batch_id=rec.id))

    def _follow(self, b: BatchRecord, now: datetime, submitting: bool) -> None:
        got = self.api.ok("GET", f"/v1/batches/{b.id}")
        if got is None:
            return
        b.status = got["status"]
        self.ledger.jobs[f"batch:{b.id}"].status = b.status if b.status in TERMINAL else "running"
        wants_cancel = b.cancel and submitting and b.status == "in_progress"
        if wants_cancel and self.api.ok("POST", f"/v1/batches/{b.id}/cancel") is not None:
            b.cancel = False
        if b.status in TERMINAL:
            b.checked = self._files_agree(b, got)

    def _files_agree(self, b: BatchRecord, got: dict[str, Any]) -> bool:
        """The output and error files' lines are the request_counts; False: read again next turn."""
        counts = got["request_counts"]
        found = {}
        for name in ("output_file_id", "error_file_id"):
            if not got.get(name):
                found[name] = 0
                continue
            r = self.api.call("GET", f"/v1/files/{got[name]}/content")
            if r is None or r.status_code != 200:
                return False
            found[name] = sum(1 for x in r.text.split("\n") if x.strip())
        want = (counts["completed"], counts["failed"], counts["total"])
        seen = (
            found["output_file_id"],
            found["error_file_id"],
            found["output_file_id"] + found["error_file_id"],
        )
        if want != seen or counts["total"] != b.lines:
            self.ledger.problem(f"batch {b.id} ({b.status}): request_counts {counts}, file lines {found}")
        self.ledger.stats[f"batches_{b.status}"] += 1
        return True
