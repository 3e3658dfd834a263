"""At the end, from S3 and the results API: no payload written twice under two keys, every result's
payload where its row says, and every earlier result version still readable.

Every input page and image of the soak is unique (tests.soak.inputs), so two objects with the same
bytes under media/, results/ or uploads/ are one payload written twice: a page rendered again under a
new key, a result stored under two versions, an upload stored twice.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from typing import Any

import httpx

from tests.soak.invariants import Checker, Violation
from tests.soak.system import TENANTS, System

PREFIXES = ("media/", "results/", "uploads/")
RESULTS = """
SELECT r.job_id::text, j.tenant, r.item_id::text, r.version, r.is_current, r.payload_key, r.answer
FROM results r JOIN jobs j ON j.id = r.job_id"""


def listing(system: System, prefix: str) -> dict[str, tuple[str, int]]:
    """key -> (etag, size) of every object under ``prefix``, from moto itself."""
    s3 = system.stack._s3
    out: dict[str, tuple[str, int]] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=system.stack.bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            out[o["Key"]] = (o["ETag"], int(o["Size"]))
    return out


class Storage:
    def __init__(self, system: System, checker: Checker, sample: int, rng: random.Random) -> None:
        self.system, self.checker, self.sample, self.rng = system, checker, sample, rng
        self.bad: list[Violation] = []
        self.figures: dict[str, int] = {}

    def check(self) -> tuple[list[Violation], dict[str, int]]:
        objects: dict[str, tuple[str, int]] = {}
        for prefix in PREFIXES:
            objects |= listing(self.system, prefix)
        self._twice(objects)
        rows = self.checker.rows(RESULTS)
        self._payloads(rows, objects)
        self._history(rows)
        return self.bad, self.figures

    def _fail(self, check: str, examples: list[str]) -> None:
        if examples:
            self.bad.append(Violation(check, len(examples), examples[:10]))

    def _twice(self, objects: dict[str, tuple[str, int]]) -> None:
        by_bytes: dict[tuple[str, str, int], list[str]] = defaultdict(list)
        for key, (etag, size) in objects.items():
            by_bytes[(key.split("/", 1)[0], etag, size)].append(key)  # an upload and its render may match
        twice = [" = ".join(keys) for keys in by_bytes.values() if len(keys) > 1]
        self._fail("payload_written_twice_under_two_keys", twice)
        self.figures |= {f"objects_{p.rstrip('/')}": sum(k.startswith(p) for k in objects) for p in PREFIXES}

    def _payloads(self, rows: list[tuple[Any, ...]], objects: dict[str, tuple[str, int]]) -> None:
        keys = {r[5] for r in rows}
        self._fail("result_payload_missing", sorted(k for k in keys if k not in objects))
        orphans = [k for k in objects if k.startswith("results/") and k not in keys]
        self.figures["orphan_result_payloads"] = len(orphans)  # outputs dropped (their job had stopped)
        wrong = []
        for job_id, _, item_id, version, _, key, answer in self.rng.sample(rows, min(self.sample, len(rows))):
            body = json.loads(self.system.stack.read(key))
            if (body["item_id"], body["version"], body["answer"]) != (item_id, version, answer):
                wrong.append(f"{key} of {job_id}")
        self._fail("result_payload_differs_from_its_row", wrong)

    def _history(self, rows: list[tuple[Any, ...]]) -> None:
        """Items with several versions: every version in GET results?history=true, as stored, one
        current; and every version's payload readable."""
        versions: dict[str, dict[str, list[tuple[Any, ...]]]] = defaultdict(lambda: defaultdict(list))
        for r in rows:
            versions[r[0]][r[2]].append(r)
        multi = {j: items for j, items in versions.items() if any(len(v) > 1 for v in items.values())}
        self.figures["items_with_several_versions"] = sum(
            1 for items in multi.values() for v in items.values() if len(v) > 1
        )
        self.figures["result_versions_most"] = max(
            (len(v) for i in versions.values() for v in i.values()), default=0
        )
        bad: list[str] = []
        for job_id, items in multi.items():
            tenant = items[next(iter(items))][0][1]
            bad += self._job_history(job_id, tenant, items)
        self._fail("earlier_result_version_not_readable", bad)

    def _job_history(self, job_id: str, tenant: str, items: dict[str, list[tuple[Any, ...]]]) -> list[str]:
        r = httpx.get(f"{self.system.base}/v1/jobs/{job_id}/results", params={"history": "true"},
                      headers={"Authorization": f"Bearer {TENANTS[tenant]}"}, timeout=120)  # fmt: skip
        lines = [json.loads(x) for x in r.text.split("\n") if x.strip()]
        by_version = {(x["custom_id"], x.get("page"), x["version"]): x for x in lines if x.get("version")}
        wanted = {(r[2], r[3]): r for rows in items.values() for r in rows}
        bad = []
        if len(by_version) != len(wanted):
            bad.append(f"{job_id}: {len(by_version)} versions in history, {len(wanted)} stored")
        answers = {(x["version"], x["answer"]) for x in by_version.values()}
        for (item_id, version), row in wanted.items():
            if len(items[item_id]) > 1:
                body = json.loads(self.system.stack.read(row[5]))
                if body["version"] != version or (version, row[6]) not in answers:
                    bad.append(f"{job_id} item {item_id} v{version}")
        return bad
