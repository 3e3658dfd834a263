"""At the end: for every job, the counts from every view agree with each other and with Postgres.

Views: GET /v1/jobs/{id}, GET /v1/jobs/{id}/results, output.jsonl and errors.jsonl in S3, /ui's job
list, `vlmq status`, GET /v1/batches/{id} (a batch's job) and /metrics (jobs by status, over every
tenant). A view that counts cancelled items apart (a ``cancelled`` count) is compared on that too.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from typing import Any

import httpx

from tests.soak.clients import TERMINAL
from tests.soak.invariants import Checker, Violation
from tests.soak.system import METRICS_TOKEN, TENANTS, System

UI_ROW = re.compile(
    r'<tr data-job="([^"]+)">.*?<td class="status">([^<]+)</td>\s*<td>(\d+)/(\d+)(.*?)</td>', re.DOTALL
)
UI_OUTCOME = re.compile(r'<span class="(error|cancelled|expired)">(\d+) ')
# Each item's outcome, spelled out from its stored status as jobs.status.outcome does (written again here
# on purpose: the soak checks the product's counting, it does not reuse it).
_KIND = {"sources": "i.parent_id IS NULL", "units": "i.parent_id IS NOT NULL"}
_OUTCOME = {
    "succeeded": "i.status = 'succeeded'",
    "failed": "i.status = 'failed' AND i.error_code IS DISTINCT FROM 'expired'",
    "cancelled": "i.status = 'cancelled'",
    "expired": "i.status = 'failed' AND i.error_code = 'expired'",
}
FACTS = (
    "SELECT j.id::text, j.tenant, j.status, "
    + ", ".join(
        f"count(*) FILTER (WHERE {kind})"
        + "".join(f", count(*) FILTER (WHERE {kind} AND {o})" for o in _OUTCOME.values())
        for kind in _KIND.values()
    )
    + " FROM jobs j JOIN items i ON i.job_id = j.id GROUP BY j.id"
)


def _counts(c: dict[str, int]) -> tuple[int, int, int, int, int]:
    """(total, completed, failed, cancelled, expired): the outcome model every view shares."""
    return c["total"], c["completed"], c["failed"], c["cancelled"], c["expired"]


class Views:
    def __init__(self, system: System, checker: Checker) -> None:
        self.system, self.checker = system, checker
        self.bad: list[Violation] = []
        self.http = {t: _client(system.base, k) for t, k in TENANTS.items()}
        self.ui = {t: httpx.Client(base_url=system.base, timeout=120, cookies={"vlmq_key": k})
                   for t, k in TENANTS.items()}  # fmt: skip

    def check(self) -> list[Violation]:
        facts = {r[0]: r for r in self.checker.rows(FACTS)}
        api = {job_id: self._api(job_id, row) for job_id, row in facts.items()}
        self._files(api, facts)
        self._ui(api, facts)
        self._cli(api, facts)
        self._batches(api)
        self._metrics(facts)
        for c in [*self.http.values(), *self.ui.values()]:
            c.close()
        return self.bad

    def _fail(self, check: str, what: str) -> None:
        found = next((v for v in self.bad if v.check == check), None)
        if found is None:
            found = Violation(check, 0)
            self.bad.append(found)
        found.count += 1
        if len(found.examples) < 10:
            found.examples.append(what)

    def _api(self, job_id: str, row: tuple[Any, ...]) -> dict[str, Any]:
        job = self.http[row[1]].get(f"/v1/jobs/{job_id}").json()
        want = (row[2], tuple(row[3:8]), tuple(row[8:13]))
        seen = (job["status"], _counts(job["request_counts"]), _counts(job["page_counts"]))
        if seen != want:
            self._fail("api_counts_differ_from_postgres", f"{job_id}: api {seen}, postgres {want}")
        return dict(job)

    def _files(self, api: dict[str, dict[str, Any]], facts: dict[str, tuple[Any, ...]]) -> None:
        """output.jsonl holds the succeeded lines of GET results, errors.jsonl the others."""
        for job_id, job in _ended(api).items():
            lines = _jsonl(self.http[facts[job_id][1]].get(f"/v1/jobs/{job_id}/results").text)
            ok = sorted(_line_key(x) for x in lines if x["status"] == "succeeded")
            bad = sorted(_line_key(x) for x in lines if x["status"] != "succeeded")
            if len(ok) != job["page_counts"]["completed"]:
                self._fail(
                    "results_differ_from_counts", f"{job_id}: {len(ok)} succeeded lines, {job['page_counts']}"
                )
            out = [_line_key(x) for x in _jsonl(self._s3(f"jobs/{job_id}/output.jsonl"))]
            err = [_line_key(x) for x in _jsonl(self._s3(f"jobs/{job_id}/errors.jsonl"))]
            if sorted(out) != ok or sorted(err) != bad:
                what = f"{job_id}: files {len(out)}/{len(err)} lines, results {len(ok)}/{len(bad)}"
                self._fail("output_files_differ_from_results", what)

    def _s3(self, key: str) -> str:
        try:
            return self.system.stack.read(key).decode()
        except Exception:
            return ""

    def _ui(self, api: dict[str, dict[str, Any]], facts: dict[str, tuple[Any, ...]]) -> None:
        seen: dict[str, tuple[str, int, int, int, int, int]] = {}
        for tenant in TENANTS:
            offset = 0
            while True:
                page = self.ui[tenant].get("/ui", params={"offset": offset, "limit": 500}).text
                rows = UI_ROW.findall(page)
                for job_id, status, done, total, rest in rows:
                    counts = {k: int(n) for k, n in UI_OUTCOME.findall(rest)}
                    seen[job_id] = (status, int(done), int(total), counts.get("error", 0),
                                    counts.get("cancelled", 0), counts.get("expired", 0))  # fmt: skip
                if len(rows) < 500:
                    break
                offset += 500
        for job_id, job in _ended(api).items():
            pc = job["page_counts"]
            total, completed, failed, cancelled, expired = _counts(pc)
            want = (
                job["status"],
                completed + failed + cancelled + expired,
                total,
                failed,
                cancelled,
                expired,
            )
            if seen.get(job_id) != want:
                self._fail("ui_differs_from_api", f"{job_id}: ui {seen.get(job_id)}, api {want}")

    def _cli(self, api: dict[str, dict[str, Any]], facts: dict[str, tuple[Any, ...]]) -> None:
        """`vlmq status`, run as each tenant (the CLI speaks with the first key it is given)."""
        for tenant, key in TENANTS.items():
            ids = [j for j in _ended(api) if facts[j][1] == tenant]
            if not ids:
                continue
            env = {
                **self.system.stack.env,
                "VLMQ_API__KEYS": f"{key}:{tenant}",
                "VLMQ_API__BASE_URL": self.system.base,
            }
            out = subprocess.run([sys.executable, "-m", "tests.soak.cli_status", *ids], env=env,
                                 capture_output=True, text=True, timeout=600, cwd=os.getcwd())  # fmt: skip
            got = json.loads(out.stdout or "{}")
            for job_id in ids:
                cli, want = got.get(job_id), api[job_id]
                if cli is None or _view(cli) != _view(want):
                    self._fail(
                        "cli_status_differs_from_api", f"{job_id}: {cli and _view(cli)} vs {_view(want)}"
                    )

    def _batches(self, api: dict[str, dict[str, Any]]) -> None:
        for batch_id, job_id, rejected, total in self.checker.rows(
            "SELECT id, job_id::text, rejected, total FROM batches"
        ):
            b = self.http["openai"].get(f"/v1/batches/{batch_id}").json()
            job = api.get(str(job_id)) if job_id else None
            rc = job["request_counts"] if job else {}
            # OpenAI's request_counts have completed and failed only: a request that did not run
            # (cancelled, expired) or was refused at creation counts as failed there.
            not_ok = rc.get("failed", 0) + rc.get("cancelled", 0) + rc.get("expired", 0) + rejected
            want = {"total": total, "completed": rc.get("completed", 0), "failed": not_ok}
            got = b["request_counts"]
            if (got["total"], got["completed"], got["failed"]) != (
                want["total"],
                want["completed"],
                want["failed"],
            ):
                self._fail("batch_counts_differ_from_job", f"{batch_id}: batch {got}, job {want}")

    def _metrics(self, facts: dict[str, tuple[Any, ...]]) -> None:
        r = httpx.get(f"{self.system.base}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        jobs = {
            m[0]: float(m[1]) for m in re.findall(r'^vlmq_jobs\{status="(\w+)"\} ([\d.e+]+)$', r.text, re.M)
        }
        items = {
            m[0]: float(m[1]) for m in re.findall(r'^vlmq_items\{status="(\w+)"\} ([\d.e+]+)$', r.text, re.M)
        }
        want = Counter(row[2] for row in facts.values())
        if {k: int(v) for k, v in jobs.items() if v} != dict(want):
            self._fail("metrics_jobs_differ_from_postgres", f"metrics {jobs}, postgres {dict(want)}")
        if any(items.values()):
            self._fail("metrics_items_still_open", f"{items}")


def _client(base: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=base, timeout=120, headers={"Authorization": f"Bearer {key}"})


def _ended(api: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Jobs that ended: the views of a job still running may be read a moment apart, and a job that did
    not end is a violation of its own (job_not_terminal)."""
    return {j: job for j, job in api.items() if job["status"] in TERMINAL}


def _view(job: dict[str, Any]) -> tuple[Any, ...]:
    return job["status"], _counts(job["request_counts"]), _counts(job["page_counts"])


def _jsonl(body: str) -> list[dict[str, Any]]:
    # split("\n"), not splitlines(): JSON leaves U+2028 unescaped
    return [json.loads(x) for x in body.split("\n") if x.strip()]


def _line_key(x: dict[str, Any]) -> tuple[str, int, str, int]:
    return (str(x["custom_id"]), x.get("page") or 0, str(x["status"]), int(x.get("version") or 0))
