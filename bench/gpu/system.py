"""The whole system on the GPU machine: pages uploaded over REST, through Postgres, Redis, S3 (moto),
the prep workers and the vLLM GPU worker, until every result is stored."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from api.cli import ENGINE_READY
from api.cli.client import Client
from api.cli.devstack import DevStack, free_port
from api.cli.processes import celery_ready_line, gpu_worker_name, start_vlmq, wait_for_log, wait_healthy
from bench.gpu import fair
from bench.gpu.cpu import BusyCores
from bench.gpu.engine_log import loop_series, read_log, stats_series, summary
from bench.gpu.raw import STATS_SECONDS, doc_seeds
from bench.gpu.startup import breakdown
from bench.gpu.timeline import timeline
from bench.pages import documents, make_pdf
from jobs.config import Settings
from migrations import upgrade
from workers.inference.vllm_engine import TIMING


def _env(
    model: str, quantization: str | None, max_tokens: int, side: int, in_flight: int, batch: int, engine: str,
    tp: int = 1,
) -> dict[str, str]:  # fmt: skip
    env = {
        "VLMQ_API__KEYS": f"bench-key:bench,{fair.SMALL_KEY}:small", "VLMQ_MODEL__ENGINE": engine,
        "VLMQ_MODEL__PATH": model,
        "VLMQ_MODEL__MAX_NEW_TOKENS": str(max_tokens), "VLMQ_MODEL__BATCHES_IN_FLIGHT": str(in_flight),
        "VLMQ_MODEL__GPU_MEMORY_UTILIZATION": "0.85", "VLMQ_LIMITS__BATCH_SIZE": str(batch),
        "VLMQ_LIMITS__RENDER_LONGEST_SIDE": str(side), "VLMQ_MODEL__MAX_NUM_SEQS": "256",
        "VLMQ_MODEL__LOG_STATS_SECONDS": str(STATS_SECONDS), "VLMQ_MODEL__TENSOR_PARALLEL_SIZE": str(tp),
    }  # fmt: skip
    if quantization:
        env["VLMQ_MODEL__QUANTIZATION"] = quantization
    return env


def run_system(
    model: str, sizes: list[int], per_doc: int, max_tokens: int, side: int, quantization: str | None,
    in_flight: int = 0, batch: int = 8, prep_procs: int | None = None, profile: Path | None = None,
    prep_nice: list[int] | None = None, engine: str = "vllm", tp: int = 1, gpu_workers: int = 1,
    fair_pages: int = 0, small_every: float = 5.0, video_every: int = 0, restart: bool = False,
    engine_env: dict[str, str] | None = None, emit: Callable[[dict[str, Any]], None] | None = None,
    logs_to: Path | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """One job per size in turn, through one set of services and workers (a worker that has been up a
    while, as in production), each on its own documents, the raw run's (``doc_seeds``).

    ``prep_procs``: prep worker processes, default one per CPU core (as `vlmq worker` does).
    ``prep_nice``: each run's CPU niceness for the prep processes (default 0: as the GPU worker's).
    ``engine``: "fake" runs the same path on a CPU (CI checks the benchmark itself that way).
    ``tp``: GPUs per engine (tensor parallel); ``gpu_workers``: GPU workers (data parallel), worker i on
    GPUs i*tp .. i*tp+tp-1. ``fair_pages``: then 1-page jobs of another tenant on the idle system, and
    a bulk job of that many pages with such a job every ``small_every`` seconds (bench.gpu.fair); with
    ``video_every`` = k, every k-th of them is a 3 s video instead. ``emit``: called with each run's
    figures as soon as it ends, so a machine taken back mid-lease keeps the runs already done.
    ``restart``: last, the first GPU worker is stopped and started again, its start timed (issue 27's
    warm start: compile caches and the weights' page cache are warm by then) and checked with a job.
    Each start's phases (bench.gpu.startup) go out as a ``worker_start`` line. ``engine_env``: more
    variables for the workers (the "openai" engine's server, bench.gpu.serve). ``logs_to``: the
    processes' logs are copied there at the end (a lease's poll brings that folder back)."""
    nices = prep_nice or [0] * len(sizes)
    prep_procs = prep_procs or os.cpu_count() or 1
    state = Path(tempfile.mkdtemp(prefix="vlmq-bench-"))
    with DevStack(Settings(_env_file=None, state_dir=state), state) as stack:  # type: ignore[call-arg]
        bench_env = _env(model, quantization, max_tokens, side, in_flight, batch, engine, tp)
        bench_env |= engine_env or {}
        env = {**os.environ, **stack.start(), **bench_env}
        upgrade(env["VLMQ_DB__URL"])
        port = free_port()
        t_start = time.monotonic()
        procs = start_vlmq(
            env, state / "logs", port, prep_concurrency=prep_procs, log_level="info",
            gpu_workers=[_gpus(i, tp) if gpu_workers > 1 else {} for i in range(gpu_workers)],
        )  # fmt: skip
        gpu = [procs[gpu_worker_name(i)] for i in range(gpu_workers)]
        try:
            wait_healthy(f"http://127.0.0.1:{port}", list(procs.values()), 120)
            _say(f"services up; waiting for {gpu_workers} GPU worker(s) ({gpu[0].log_path})")
            for i, worker in enumerate(gpu):
                _wait_ready(worker, i)
            worker_start_s = time.monotonic() - t_start
            _say(f"GPU worker(s) ready in {worker_start_s:.1f} s")
            results: list[dict[str, Any]] = []

            def done(res: dict[str, Any]) -> None:
                results.append({"engine_kind": engine, **res})
                if emit:
                    emit(results[-1])

            done(_start_line("first", worker_start_s, gpu[0]))
            # A warm-up job through every process (the raw run warms its engine up too): the API's and
            # the workers' first requests pay one-time costs (connections, lazy imports) of 0.1-0.4 s.
            _measure(port, [make_pdf(2, seed=999_999)])

            for run, (pages, first, nice) in enumerate(
                zip(sizes, doc_seeds(sizes, per_doc), nices, strict=True)
            ):
                docs = documents(pages, per_doc, first)
                # The prep worker runs in its own process group: its pool children are niced with it.
                os.setpriority(os.PRIO_PGRP, procs["worker-prep"].proc.pid, nice)
                _say(f"submitting {len(docs)} PDFs ({pages} pages, prep nice {nice})")
                spy = TailProfile(gpu[0], profile) if profile is not None and run == 0 else None
                with BusyCores(os.cpu_count() or 1) as cpu, spy or contextlib.nullcontext():
                    res = _measure(port, docs)
                t0, job_id = res.pop("t0_epoch"), res["job_id"]
                t1 = t0 + res["wall_s"]
                texts = [w.log_path.read_text(errors="replace") for w in gpu]
                logs = [read_log(text) for text in texts]
                mine = [t for timings, _ in logs for t in timings if t0 <= t["arrival"] <= t1]
                series = [stats_series(lines, t0, t1) for _, lines in logs]
                done({
                    **res, "worker_start_s": round(worker_start_s, 1), "prep_nice": nice,
                    "tp": tp, "gpu_workers": gpu_workers,
                    "timeline": timeline(env["VLMQ_DB__URL"], job_id, t0), "engine": summary(mine, t0),
                    "engine_stats": series[0], "engine_stats_other_workers": series[1:],
                    "engine_loop": loop_series(texts[0].splitlines(), t0, t1),
                    "busy_cores": cpu.series, "profile": spy.outputs if spy else None,
                })  # fmt: skip
                _say(f"{pages} pages: {res['wall_s']} s")
            if fair_pages:
                seed = max(sizes) + 10_000
                done(_fair(port, fair_pages, per_doc, small_every, seed, video_every))
            if restart:
                seconds, gpu[0] = _restart(gpu[0], port)
                procs[gpu_worker_name(0)] = gpu[0]
                done(_start_line("restart", seconds, gpu[0]))
            return results
        except BaseException:
            _say("failed; the GPU worker's log ends with:\n" + gpu[0].log_tail(4000))
            raise
        finally:
            for p in reversed(list(procs.values())):
                p.stop()
            if logs_to is not None:
                for log in (state / "logs").glob("*.log"):
                    shutil.copy(log, logs_to / f"{engine}-{log.name}")


def _fair(port: int, pages: int, per_doc: int, every: float, seed: int, video_every: int) -> dict[str, Any]:
    base = f"http://127.0.0.1:{port}"
    alone = fair.idle(base)
    clips = fair.idle(base, 2, video=True) if video_every else []
    _say(f"idle 1-page jobs: {alone}, videos: {clips}; bulk of {pages} pages, a small job every {every} s")
    with fair.Arrivals(base, every, video_every) as arrivals:
        res = _measure(port, documents(pages, per_doc, seed))
    small, videos = arrivals.times()
    _say(f"small jobs: {fair.summary(small)}; videos: {fair.summary(videos)}")
    res.pop("t0_epoch")
    return {**res, "what": "system_fair", "small_every_s": every, "idle": fair.summary(alone),
            "idle_s": alone, "small": fair.summary(small), "small_s": small, "video_every": video_every,
            "idle_video": fair.summary(clips), "idle_video_s": clips, "video": fair.summary(videos),
            "video_s": videos}  # fmt: skip


def _start_line(kind: str, seconds: float, worker: Any) -> dict[str, Any]:
    """A GPU worker's start: from its process's spawn to Celery consuming, and the phases it logged."""
    return {"what": "worker_start", "kind": kind, "ready_s": round(seconds, 1),
            **breakdown(worker.log_path.read_text(errors="replace"))}  # fmt: skip


def _restart(worker: Any, port: int) -> tuple[float, Any]:
    """The worker stopped (SIGTERM: idle, it drains at once) and the same command started again once its
    GPU memory is free (the engine core is a child in its group), logging to a new file; the seconds
    from that spawn to Celery consuming, and a job run through it."""
    worker.stop(timeout=60)
    _wait_gpu_free()
    t0 = time.monotonic()
    worker = worker.again(worker.log_path.with_name(worker.log_path.stem + "-restart.log"))
    _wait_ready(worker, 0)
    seconds = time.monotonic() - t0
    _say(f"GPU worker restarted: ready in {seconds:.1f} s")
    check = _measure(port, [make_pdf(2, seed=999_998)])  # it takes work again
    if check["status"] != "completed":
        raise RuntimeError(f"the restarted worker's job ended {check['status']}")
    return seconds, worker


def _wait_ready(worker: Any, i: int) -> None:
    """Until the i-th GPU worker's engine is loaded and Celery consumes."""
    wait_for_log(worker, ENGINE_READY, 900)
    wait_for_log(worker, celery_ready_line(i), 60)


def _wait_gpu_free(limit_mib: int = 2048, timeout: float = 120) -> None:
    """Until every GPU holds less than ``limit_mib`` (nothing to wait for without nvidia-smi: CI)."""
    smi = shutil.which("nvidia-smi")
    deadline = time.monotonic() + timeout
    while smi and time.monotonic() < deadline:
        out = subprocess.run([smi, "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, check=False).stdout  # fmt: skip
        if all(int(x) < limit_mib for x in out.split()):
            return
        time.sleep(1)


def _gpus(i: int, tp: int) -> dict[str, str]:
    """The i-th data-parallel worker's GPUs."""
    return {"CUDA_VISIBLE_DEVICES": ",".join(str(i * tp + k) for k in range(tp))}


def _say(line: str) -> None:
    """Progress on stderr, so a run stopped from outside still shows how far it got."""
    print(f"[system {time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


class TailProfile:
    """py-spy on a GPU worker during a run, in two windows of ``seconds``: mid-run (``mid_s`` after the
    upload, the engine decoding) and at the end, from the run's first finished request (the worker logs
    ``TIMING``). Each window samples twice at once: every thread, idle or not (``.threads``: what each
    thread was doing), and only the thread holding the GIL (``.gil``: who keeps the others, the engine's
    event loop among them, waiting). Raw (collapsed) stacks per thread. A whole-run profile would
    dilute these seconds in the minutes of loading before them."""

    def __init__(self, worker: Any, out: Path, seconds: int = 10, mid_s: float = 28.0) -> None:
        self.worker, self.out, self.seconds, self.mid_s = worker, out, seconds, mid_s
        self.outputs: list[str] = []
        self._stop = threading.Event()
        self._procs: list[subprocess.Popen[bytes]] = []
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> TailProfile:
        self._offset, self._t0 = self.worker.log_path.stat().st_size, time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for p in self._procs:
            p.wait(timeout=self.seconds + 60)

    def _watch(self) -> None:
        seen, mark, mid = b"", TIMING.encode(), False
        while shutil.which("py-spy") and not self._stop.wait(0.05):
            if not mid and time.monotonic() - self._t0 >= self.mid_s:
                mid = self._record("mid")
            with self.worker.log_path.open("rb") as f:
                f.seek(self._offset)
                seen = seen[-len(mark) :] + f.read()
                self._offset = f.tell()
            if mark in seen:
                self._record("tail")
                return

    def _record(self, window: str) -> bool:
        spy, pid = shutil.which("py-spy") or "py-spy", str(self.worker.proc.pid)
        for kind, extra in (("threads", "--idle"), ("gil", "--gil")):
            path = f"{self.out}.{window}.{kind}"
            cmd = [spy, "record", "--pid", pid, "--duration", str(self.seconds), "--rate", "100", "--format",
                   "raw", "--nonblocking", "--threads", extra, "--output", path]  # fmt: skip
            self._procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
            self.outputs.append(path)
        _say(f"py-spy on the GPU worker ({window}) for {self.seconds} s")
        return True


def _measure(port: int, docs: list[bytes]) -> dict[str, Any]:
    with (
        Client(f"http://127.0.0.1:{port}", "bench-key", timeout=300) as client,
        tempfile.TemporaryDirectory() as d,
    ):
        paths = []
        for i, data in enumerate(docs):
            paths.append(Path(d) / f"doc-{i:03d}.pdf")
            paths[-1].write_bytes(data)
        t0, t0_epoch = time.monotonic(), time.time()
        job = client.submit_files(paths)
        job = client.wait(job["id"], poll=0.05, timeout=1800)  # the wall: within 50 ms of completed
        wall = time.monotonic() - t0
        lines = list(client.results(job["id"]))
    ok = [x for x in lines if x["status"] == "succeeded"]
    out_tok = sum(x["usage"]["completion_tokens"] for x in ok)
    return {
        "what": "system", "job_id": job["id"], "t0_epoch": t0_epoch,
        "status": job["status"], "pages": len(ok), "failed": len(lines) - len(ok),
        "wall_s": round(wall, 2), "pages_per_s": round(len(ok) / wall, 3), "output_tokens": out_tok,
        "output_tok_per_s": round(out_tok / wall, 1),
        "prompt_tokens_per_page": ok[0]["usage"]["prompt_tokens"] if ok else None,
    }  # fmt: skip
