"""A job submitted as an S3 prefix (issue 25), on the CPU: how fast its objects are listed and enqueued,
how soon its first result comes, and whether the API's and the workers' memory stays flat meanwhile.

    python -m bench.listing [--objects 100000] [--max-open-items 0] [--timeout S] [--out FILE.json]

A whole system of its own, as bench.fairness builds it (tests.chaos.stack: PostgreSQL, Redis, moto's S3
behind the stack's proxy, the API, a prep worker of 2 processes, the GPU worker with the fake engine
sleeping ``--latency`` s a batch, beat). Setup, not measured: ``--objects`` 32x32 PNGs, each its own
colour (own bytes, own ETag), 1,000 a folder, put straight into moto by ``--threads`` threads. Then one
job of ``{"source": {"prefix": "s3://BUCKET/PREFIX/**/*.png"}}``, read every 0.5 s: the time to its first
completed page and to ``listing.status == "done"`` with every object discovered, pages/s and objects/s,
its open items (sources and pages not finished: what the pacing counts), prep's pages/s while listing and
``--after`` s after; the RSS of each process with its children (Celery's pool) and the load average every
1 s. Then the job is cancelled (prep of 100,000 images on 2 cores takes long and is not what is measured).

``--max-open-items 0`` (the default here) turns pacing off, so that the listing's own speed is measured;
with the product's 20,000 the listing stops at the cap until items finish (follow it ``--timeout`` s).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields, replace
from datetime import date
from pathlib import Path
from typing import Any

import boto3
import httpx
import psutil
from PIL import Image

from bench.fairness import services
from tests.chaos.stack import AUTH, S3_SECRET, PgServer, Stack

POLL_S, SAMPLE_S = 0.5, 1.0
FINISHED = ("completed", "failed", "cancelled", "expired")  # job statuses and Counts' keys alike


@dataclass(frozen=True)
class Config:
    objects: int = 100_000
    latency: float = 0.05  # the fake engine's seconds a batch
    max_open_items: int = 0  # VLMQ_LISTING__MAX_OPEN_ITEMS; 0: no pacing
    page_size: int = 1000  # VLMQ_LISTING__PAGE_SIZE
    pause: float = 2.0  # VLMQ_LISTING__PAUSE_SECONDS
    threads: int = 16  # putting the objects
    timeout: float = 1800.0  # for the listing to end (a paced one: how long to follow it)
    after: float = 20.0  # seconds followed after the listing ended: prep's pages/s without it

    def env(self) -> dict[str, str]:
        # No re-enqueue of items waiting 60 s (the chaos stack's): every listed source waits far longer
        # in the prep queue, and a sweep re-sending tens of thousands would load what is measured.
        return {"VLMQ_MODEL__FAKE_LATENCY_SECONDS": str(self.latency),
                "VLMQ_QUEUE__REQUEUE_AFTER_SECONDS": "86400",
                "VLMQ_LISTING__MAX_OPEN_ITEMS": str(self.max_open_items),
                "VLMQ_LISTING__PAGE_SIZE": str(self.page_size),
                "VLMQ_LISTING__PAUSE_SECONDS": str(self.pause)}  # fmt: skip


def put_objects(moto_port: int, bucket: str, prefix: str, cfg: Config) -> dict[str, Any]:
    """``cfg.objects`` distinct PNGs under ``prefix``, straight into moto (not through the proxy)."""
    local = threading.local()

    def put(i: int) -> None:
        png = io.BytesIO()
        Image.new("RGB", (32, 32), (i & 0xFF, (i >> 8) & 0xFF, (i >> 16) & 0xFF)).save(png, "PNG")
        if not hasattr(local, "s3"):
            local.s3 = boto3.client(
                "s3", endpoint_url=f"http://127.0.0.1:{moto_port}", region_name="us-east-1",
                aws_access_key_id="chaos", aws_secret_access_key=S3_SECRET,
            )  # fmt: skip
        local.s3.put_object(Bucket=bucket, Key=f"{prefix}/{i // 1000:03d}/{i:06d}.png", Body=png.getvalue())

    t0 = time.monotonic()
    with ThreadPoolExecutor(cfg.threads) as pool:
        list(pool.map(put, range(cfg.objects)))
    seconds = time.monotonic() - t0
    return {"seconds": round(seconds, 1), "objects_per_s": round(cfg.objects / seconds, 1)}


class Memory(threading.Thread):
    """Every SAMPLE_S: each process's RSS with its children's (MiB), and the 1-minute load average."""

    def __init__(self, pids: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.pids, self.stopped = pids, threading.Event()
        self.samples: list[dict[str, Any]] = []

    def run(self) -> None:
        while not self.stopped.is_set():
            self.samples.append({"t": time.monotonic(), "load1": os.getloadavg()[0]} | self.rss())
            self.stopped.wait(SAMPLE_S)

    def rss(self) -> dict[str, float]:
        out = {}
        for name, pid in self.pids.items():
            try:
                top = psutil.Process(pid)
                tree = [top, *top.children(recursive=True)]
                out[name] = sum(p.memory_info().rss for p in tree) / 2**20
            except psutil.NoSuchProcess:
                continue  # one of its children ended between the two calls: the next sample has it
        return out

    def series(self, t0: float) -> list[dict[str, float]]:
        """Every sample, its time from ``t0`` (the job's submission), MiB rounded."""
        return [{k: round(v - t0 if k == "t" else v, 1) for k, v in x.items()} for x in self.samples]

    def report(self, t0: float, t1: float) -> dict[str, Any]:
        """Start, peak and end per process over [t0, t1]; the load average's mean and peak."""
        during = [s for s in self.samples if t0 <= s["t"] <= t1] or self.samples[-1:]
        out: dict[str, Any] = {}
        for name in self.pids:
            v = [s[name] for s in during if name in s]
            out[name] = {"start_mib": round(v[0]), "peak_mib": round(max(v)), "end_mib": round(v[-1])}
        load = [s["load1"] for s in during]
        return {"rss": out, "load1_mean": round(sum(load) / len(load), 2), "load1_peak": max(load)}


def open_items(job: dict[str, Any]) -> int:
    """Sources and pages not finished: what the listing's pacing counts (jobs.listings.Lister._paused)."""
    return sum(c["total"] - sum(c[k] for k in FINISHED) for c in (job["request_counts"], job["page_counts"]))


def follow(http: httpx.Client, job_id: str, t0: float, cfg: Config) -> dict[str, Any]:
    """Read the job every POLL_S until its first page has completed and ``cfg.after`` s have passed since
    its listing ended (or ``cfg.timeout`` s, which a paced listing may take: it waits for prep)."""
    first = done = None
    trace: list[dict[str, Any]] = []
    while (now := time.monotonic() - t0) < cfg.timeout and (
        first is None or done is None or now < done + cfg.after
    ):
        job = http.get(f"/v1/jobs/{job_id}").raise_for_status().json()
        li, completed = job["listing"], job["page_counts"]["completed"]
        trace.append({"t": round(now, 2), "discovered": li["discovered"], "pages": li["pages"],
                      "open": open_items(job), "completed": completed})  # fmt: skip
        first = now if first is None and completed else first
        if done is None and li["status"] != "listing":
            done = now
            if li["status"] != "done" or li["discovered"] != cfg.objects:
                raise RuntimeError(f"the listing ended {li['status']} at {li['discovered']}: {li}")
        if job["status"] in FINISHED:
            raise RuntimeError(f"the job ended {job['status']} before it was measured: {job}")
        time.sleep(POLL_S)
    if first is None or (done is None and not cfg.max_open_items):
        raise RuntimeError(f"not listed and started after {cfg.timeout:g} s: {trace[-1]}")
    return figures(trace, first, done, cfg)


def figures(trace: list[dict[str, Any]], first: float, done: float | None, cfg: Config) -> dict[str, Any]:
    """Times, rates, open items; prep's pages/s while listing and after it (``cfg.after`` s)."""
    end, last = done or trace[-1]["t"], trace[-1]
    at = next(x for x in trace if x["t"] >= end)
    after = (last["completed"] - at["completed"]) / (last["t"] - end) if done and last["t"] > end else None
    capped = [x["t"] for x in trace if cfg.max_open_items and x["open"] >= cfg.max_open_items]
    return {"first_result_s": round(first, 2), "listed_s": done and round(done, 2), "pages": at["pages"],
            "discovered": at["discovered"], "pages_per_s": round(at["pages"] / end, 2),
            "objects_per_s": round(at["discovered"] / end, 1),
            "max_open_items": max(x["open"] for x in trace), "first_capped_s": capped[0] if capped else None,
            "prep_pages_per_s_listing": round(at["completed"] / end, 2),
            "prep_pages_per_s_after": after and round(after, 2), "trace": trace}  # fmt: skip


def cancel(http: httpx.Client, job_id: str) -> float | str:
    """Seconds from the cancel to the job's ``cancelled``; or the API's answer, when it refused."""
    t0 = time.monotonic()
    if (r := http.post(f"/v1/jobs/{job_id}/cancel")).is_error:
        return f"{r.status_code} after {time.monotonic() - t0:.1f} s: {r.text}"
    while http.get(f"/v1/jobs/{job_id}").json()["status"] not in FINISHED:
        if time.monotonic() - t0 > 600:
            raise RuntimeError(f"job {job_id} not cancelled after 600 s")
        time.sleep(POLL_S)
    return round(time.monotonic() - t0, 2)


def measure(cfg: Config, pg: PgServer, moto_port: int, root: Path) -> dict[str, Any]:
    stack = Stack(root, pg, moto_port, cfg.env())
    try:
        stack.start_all()
        prefix = f"listing/{uuid.uuid4().hex[:8]}"
        put = put_objects(moto_port, stack.bucket, prefix, cfg)
        print(f"put {cfg.objects:,} objects: {put['seconds']} s, {put['objects_per_s']}/s", flush=True)
        pids = {name: p.pid for name, p in stack.procs.items()} | {"redis": stack.redis_proc.pid}
        memory = Memory(pids)
        memory.start()
        with httpx.Client(base_url=stack.base, headers=AUTH, timeout=120) as http:
            time.sleep(3 * SAMPLE_S)  # the idle system's memory, before the job
            t0 = time.monotonic()
            body = {"source": {"prefix": f"s3://{stack.bucket}/{prefix}/**/*.png"}}
            job_id = http.post("/v1/jobs", json=body).raise_for_status().json()["id"]
            listing = follow(http, job_id, t0, cfg)
            idle = memory.report(0, t0)
            during = memory.report(t0, t0 + (listing["listed_s"] or cfg.timeout))
            listing["cancel_s"] = cancel(http, job_id)
            if isinstance(listing["cancel_s"], str):  # a finding: the API's log says why
                listing["api_log"] = stack.procs["api"].log_tail(6000)
        memory.stopped.set()
        return {"config": asdict(cfg) | {"env": cfg.env(), "cpus": os.cpu_count()}, "put": put,
                "listing": listing, "idle": idle, "while_listing": during,
                "samples": memory.series(t0)}  # fmt: skip
    finally:
        stack.stop()


def text(r: dict[str, Any]) -> str:
    c, li, m = r["config"], r["listing"], r["while_listing"]
    pacing = f"max open items {c['max_open_items']:,}" if c["max_open_items"] else "pacing off"
    listed = f"all listed and enqueued in {li['listed_s']} s" if li["listed_s"] else "listing not ended"
    cancel = f"{li['cancel_s']} s" if isinstance(li["cancel_s"], float) else f"REFUSED {li['cancel_s']}"
    lines = [
        f"listing (issue 25): {c['objects']:,} objects, pages of {c['page_size']}, {pacing}, fake engine "
        f"{c['latency']} s a batch; {c['cpus']} CPUs",
        f"put (setup): {r['put']['objects_per_s']:,.0f} objects/s ({r['put']['seconds']} s)",
        f"first result {li['first_result_s']} s; {listed}: {li['discovered']:,} objects, "
        f"{li['pages']} pages, {li['pages_per_s']} pages/s, {li['objects_per_s']:,} objects/s",
        f"prep pages/s: while listing {li['prep_pages_per_s_listing']}, after {li['prep_pages_per_s_after']}",
        f"open items (sources and pages not finished): at most {li['max_open_items']:,}"
        + (f" (the cap first reached at {li['first_capped_s']} s)" if li["first_capped_s"] else ""),
        f"cancel to cancelled: {cancel}",
        f"load average (1 min) while listing: mean {m['load1_mean']}, peak {m['load1_peak']:.2f} "
        f"(idle before: {r['idle']['load1_mean']})",
        "RSS MiB, process with its children: idle | start, peak, end while listing",
    ]
    for name, v in m["rss"].items():
        was = r["idle"]["rss"][name]["end_mib"]
        lines.append(f"  {name:<12} {was:>5} | {v['start_mib']:>5} {v['peak_mib']:>5} {v['end_mib']:>5}")
    return "\n".join(lines)


def config(argv: list[str] | None = None) -> tuple[Config, Path]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in fields(Config):
        ap.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=None)
    ap.add_argument("--out", type=Path, help="the report as JSON (default bench/results/listing-DATE.json)")
    args = ap.parse_args(argv)
    given = {f.name: getattr(args, f.name) for f in fields(Config) if getattr(args, f.name) is not None}
    out = args.out or Path(f"bench/results/listing-{date.today()}.json")
    return replace(Config(), **given), out


def main(argv: list[str] | None = None) -> None:
    cfg, out = config(argv)
    with services() as (pg, moto_port, root):
        r = measure(cfg, pg, moto_port, root)
    print(text(r))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(r, indent=2) + "\n")


if __name__ == "__main__":
    main()
