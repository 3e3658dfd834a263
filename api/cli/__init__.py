"""The ``vlmq`` command line: run the services, submit and follow jobs, and the dev/demo helpers."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from jobs.config import get_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help="vlmq: batch GLM-4.1V jobs.")
db_app = typer.Typer(no_args_is_help=True, help="Database schema (Alembic).")
dev_app = typer.Typer(no_args_is_help=True, help="Development helpers: embedded servers, tiny model.")
app.add_typer(db_app, name="db")
app.add_typer(dev_app, name="dev")
console = Console()
# The inference worker prints this once its engine has loaded (tests and benchmarks wait for it).
ENGINE_READY = "vlmq worker: engine"
err = Console(stderr=True)


def _logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Bind address (default: settings)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: settings)")] = None,
    log_level: str = "info",
) -> None:
    """Serve the REST API."""
    import uvicorn

    from api.auth import load_keys

    settings = get_settings()
    keys, is_dev = load_keys(settings)
    if is_dev:
        err.print(f"[yellow]No VLMQ_API__KEYS configured; development API key:[/] {next(iter(keys))}")
    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=host or settings.api.host,
        port=port or settings.api.port,
        log_level=log_level,
    )


@app.command()
def worker(
    queues: Annotated[str, typer.Option(help="Comma-separated: prep (CPU), gpu (inference)")] = "prep,gpu",
    concurrency: Annotated[int, typer.Option(help="Prep processes (the gpu queue runs in one process)")] = 2,
    log_level: str = "info",
) -> None:
    """Run a Celery worker. A worker with the gpu queue loads its engine once, before taking tasks."""
    _logging(log_level)
    from workers.celery_app import app as celery_app

    names = [q.strip() for q in queues.split(",") if q.strip()]
    args = ["worker", f"--queues={','.join(names)}", f"--loglevel={log_level}", "--without-gossip"]
    if "gpu" in names:
        args += _engine_pool()
    else:
        args += ["--pool=prefork", f"--concurrency={concurrency}"]
    celery_app.worker_main(args)


def _engine_pool() -> list[str]:
    """Load the engine here, before the worker takes any task, and run tasks in this process.

    vLLM: task threads share the engine, several batches in flight keep it full. transformers: one
    task at a time (it computes one request at a time anyway).
    """
    import time

    from workers.inference.factory import get_engine

    t0 = time.monotonic()
    engine = get_engine()
    err.print(f"{ENGINE_READY} {engine.name} ({engine.model_id}) ready in {time.monotonic() - t0:.1f} s")
    if engine.name == "vllm":
        return ["--pool=threads", f"--concurrency={get_settings().model.batches_in_flight}"]
    return ["--pool=solo"]


@app.command()
def beat(log_level: str = "info") -> None:
    """Run Celery beat, the scheduler for periodic tasks (run exactly one)."""
    _logging(log_level)
    from workers.celery_app import app as celery_app

    celery_app.start(["beat", f"--loglevel={log_level}"])


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply migrations (to head by default)."""
    from migrations import upgrade

    upgrade(get_settings().db.url, revision)
    console.print(f"database at revision {revision}")


@app.command()
def submit(
    files: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False, help="PDFs or images")],
    prompt: Annotated[str | None, typer.Option(help="Prompt (default: the caption preset)")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(help="Output token limit per page")] = None,
    wait: Annotated[bool, typer.Option(help="Follow progress until the job is done")] = False,
    idempotency_key: Annotated[str | None, typer.Option(help="Retry-safe submission key")] = None,
) -> None:
    """Upload files as one job."""
    from api.cli.client import Client
    from api.cli.progress import follow

    opts = {"max_new_tokens": max_new_tokens} if max_new_tokens else {}
    with Client.from_settings(get_settings()) as client:
        job = client.submit_files(list(files), prompt=prompt, options=opts, idempotency_key=idempotency_key)
        console.print(f"job [bold]{job['id']}[/] {job['status']} ({job['request_counts']['total']} items)")
        if wait:
            job = follow(client, job["id"], console)
            _exit_for(job)


@app.command()
def status(job_id: str) -> None:
    """Print a job's status as JSON."""
    from api.cli.client import Client

    with Client.from_settings(get_settings()) as client:
        console.print_json(json.dumps(client.job(job_id)))


@app.command()
def results(
    job_id: str,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write JSONL here")] = None,
) -> None:
    """Print (or write) a job's results as JSONL."""
    from api.cli.client import Client

    with Client.from_settings(get_settings()) as client:
        lines = [json.dumps(r, ensure_ascii=False) for r in client.results(job_id)]
    if output:
        output.write_text("\n".join(lines) + "\n")
        console.print(f"{len(lines)} lines written to {output}")
    else:
        for line in lines:
            sys.stdout.write(line + "\n")


@app.command()
def demo(
    pages: Annotated[bool, typer.Option(help="Print each page's answer and reasoning")] = True,
    max_new_tokens: Annotated[int, typer.Option(help="Output tokens per page")] = 96,
) -> None:
    """Start whatever is missing, run the bundled 3-page sample PDF, and print its results."""
    from api.cli.demo import run_demo

    _exit_for(run_demo(console, max_new_tokens=max_new_tokens, show_pages=pages))


@app.command()
def quantize(
    src: Annotated[Path, typer.Argument(help="bf16 GLM-4.1V checkpoint folder")],
    dst: Annotated[Path, typer.Argument(help="Output folder for the AWQ checkpoint (must not exist)")],
    calibration: Annotated[
        str, typer.Option("--calibration", "-c", help="Folder of images/PDFs, or a vlmq job id")
    ],
    samples: Annotated[int, typer.Option(help="Calibration pages")] = 32,
    device: Annotated[str, typer.Option(help="auto (a GPU if torch sees one), cuda, cuda:N or cpu")] = "auto",
    prompt: Annotated[str | None, typer.Option(help="Prompt for folder pages (default: the preset)")] = None,
) -> None:
    """AWQ 4-bit (group 128, zero point) of a GLM-4.1V checkpoint, calibrated on your own pages."""
    from api.cli.quantize import run_quantize

    code = run_quantize(
        console, err, get_settings(), src, dst, calibration, samples=samples, device=device, prompt=prompt
    )
    raise typer.Exit(code)


@dev_app.command("up")
def dev_up() -> None:
    """Start embedded Postgres/Redis/S3 for whatever is not configured, migrate, and wait (Ctrl-C stops)."""
    from api.cli.demo import dev_stack_forever

    dev_stack_forever(console)


@dev_app.command("tiny-model")
def dev_tiny_model(
    path: Path,
    teach_sample: Annotated[bool, typer.Option(help="Teach it the sample PDF's pages (about 15 s)")] = False,
) -> None:
    """Build a tiny GLM-4.1V-shaped model with random weights (no download)."""
    from api.cli.demo import ensure_model

    ensure_model(path, console, teach=teach_sample)


def _exit_for(job: dict[str, object]) -> None:
    if job.get("status") != "completed":
        raise typer.Exit(1)


def main() -> None:
    app()
