"""What `vlmq worker` does before Celery takes tasks: the metrics exporter, and for an inference worker
the engine loaded in this process (timed by phase, workers.startup), the database pool and S3 client,
the result writers, and the ready file; then the pool Celery runs its tasks in."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from jobs.config import get_settings

# The inference worker prints this once its engine has loaded (tests and benchmarks wait for it).
ENGINE_READY = "vlmq worker: engine"
err = Console(stderr=True)


def prep_processes(concurrency: int) -> int:
    """Prep renders on the CPU, one page at a time per process: by default every core renders."""
    import os

    return concurrency if concurrency > 0 else os.cpu_count() or 1


def worker_metrics(port: int | None) -> None:
    """The exporter (see workers.metrics), set up before anything imports prometheus_client."""
    from workers.metrics import serve, use_multiprocess_dir

    metrics = get_settings().metrics
    port = port if port is not None else metrics.worker_port
    if port:
        use_multiprocess_dir(metrics.multiproc_dir)
        serve(port, metrics.worker_host, metrics.busy_window_s)
        err.print(f"vlmq worker: metrics on :{port}/metrics")


def engine_pool() -> list[str]:
    """Load the engine here, before the worker takes any task, and run tasks in this process.

    vLLM: task threads share the engine, several batches in flight keep it full. transformers: one
    task at a time (it computes one request at a time anyway).
    """
    import time

    from jobs.errors import InvalidInput
    from workers.inference.factory import get_engine
    from workers.startup import Phases

    phases = Phases()
    phases.mark("process_and_imports")  # interpreter start, imports, Celery and metrics set up
    _clear_ready_file()  # not ready while loading, whatever an earlier run left
    t0 = time.monotonic()
    try:
        engine = get_engine()
    except InvalidInput as e:  # a setting the model cannot take (tensor parallel size, say)
        err.print(f"[red]vlmq worker:[/] {e}")
        raise typer.Exit(2) from e
    load_s = time.monotonic() - t0
    parts = getattr(engine, "start_phases", {})  # the vLLM engine's own (processor, engine, warm-up)
    phases.add(parts, rest="engine_other" if parts else "engine")
    err.print(f"{ENGINE_READY} {engine.name} ({engine.model_id}) ready in {load_s:.1f} s")
    notice = get_settings().model.development_notice()
    if notice:  # the tiny model's defaults (jobs.config) and why its answers look like noise
        err.print(f"[yellow]vlmq worker:[/] {escape(notice)}", soft_wrap=True)
    from workers.context import get_context

    get_context()  # database pool and S3 client, before the task threads start
    phases.mark("database_and_s3")
    _start_writers()
    phases.mark("result_writers")
    err.print(phases.line(), soft_wrap=True)
    _write_ready_file(engine.name, engine.model_id, load_s, phases.marks)
    if engine.name == "vllm":
        return ["--pool=threads", f"--concurrency={get_settings().gpu_tasks}"]
    if engine.name == "openai":  # HTTP requests: many batches in flight, as for vLLM
        return ["--pool=threads", f"--concurrency={getattr(engine, 'task_threads', 1)}"]
    return ["--pool=solo"]


def _start_writers() -> None:
    """The result writer processes (workers.writers), started before the first batch needs them."""
    from workers import writers

    pool = writers.for_settings(get_settings())
    if pool is not None:
        pids = pool.start()
        err.print(f"vlmq worker: {len(pids)} result writer processes ({', '.join(map(str, pids))})")


def _clear_ready_file() -> None:
    path = get_settings().model.ready_file
    if path:
        Path(path).unlink(missing_ok=True)


def _write_ready_file(engine: str, model_id: str, load_s: float, phases: dict[str, float]) -> None:
    """The engine's start time, for healthchecks and dashboards (VLMQ_MODEL__READY_FILE)."""
    import os
    import time

    path = get_settings().model.ready_file
    if path:
        facts = {"engine": engine, "model_id": model_id, "load_seconds": round(load_s, 1),
                 "ready_at": time.time(), "pid": os.getpid(), "start_phases": phases}  # fmt: skip
        Path(path).write_text(json.dumps(facts) + "\n")
