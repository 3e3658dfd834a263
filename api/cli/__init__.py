"""The ``vlmq`` command line: run the services, submit and follow jobs, and the dev/demo helpers."""

from __future__ import annotations

import json
import logging
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console

from api.cli.config_doc import register as register_config_doc
from api.cli.history import register as register_history
from api.cli.probe import register as register_probe
from api.cli.reprocess import register as register_reprocess
from api.cli.soak import register as register_soak
from api.cli.worker_start import ENGINE_READY as ENGINE_READY  # tests and benchmarks wait for it
from api.cli.worker_start import engine_pool, prep_processes, worker_metrics
from jobs.config import get_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help="vlmq: batch GLM-4.1V jobs.")
db_app = typer.Typer(no_args_is_help=True, help="Database schema (Alembic).")
dev_app = typer.Typer(no_args_is_help=True, help="Development helpers: embedded servers, tiny model.")
app.add_typer(db_app, name="db")
app.add_typer(dev_app, name="dev")
console = Console()
err = Console(stderr=True)


def _log_servers(role: str) -> None:
    """Which servers this process talks to (passwords and keys are masked by jobs.adapters.redaction)."""
    s = get_settings()
    log = logging.getLogger("vlmq")
    log.info("%s: database %s, redis %s, s3 %s", role, s.db.url, s.redis.url, s.s3.endpoint_url or "AWS")


class Format(StrEnum):
    jsonl = "jsonl"
    md = "md"


def _logging(level: str) -> None:
    from jobs.adapters.redaction import install

    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install(get_settings())  # no secrets in logs


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Bind address (default: settings)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: settings)")] = None,
    log_level: str = "info",
) -> None:
    """Serve the REST API."""
    import uvicorn

    from api.auth import load_keys
    from jobs.adapters.redaction import uvicorn_log_config

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
        log_config=uvicorn_log_config(settings),
    )


@app.command()
def worker(
    queues: Annotated[
        str, typer.Option(help="Comma-separated: prep (CPU; also prep-low, maintenance), gpu (also gpu-low)")
    ] = "prep,gpu",
    concurrency: Annotated[
        int,
        typer.Option(
            help="Prep processes; 0: one per CPU core (os.cpu_count(), Celery's own default). "
            "The gpu queue runs in one process"
        ),
    ] = 0,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus metrics here (default: VLMQ_METRICS__WORKER_PORT)")
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(help="Worker name (Celery's NAME@host; default celery): one per worker on a host"),
    ] = None,
    log_level: str = "info",
) -> None:
    """Run a Celery worker. A worker with the gpu queue loads its engine once, before taking tasks.

    Each queue brings its low-priority sibling (read after it), and prep brings the sweeper's
    maintenance queue (read first)."""
    _logging(log_level)
    worker_metrics(metrics_port)
    from jobs.adapters.dispatch import worker_queues
    from workers.celery_app import app as celery_app
    from workers.liveness import install_pulse

    install_pulse(celery_app)  # the liveness file `vlmq probe worker --live` reads
    # Each lane's low-priority twin (low jobs, reprocessing) after the named queues: taken only when
    # they are empty; prep also reads the sweeper's maintenance queue, first.
    names = worker_queues([q.strip() for q in queues.split(",") if q.strip()])
    _log_servers("worker")
    args = ["worker", f"--queues={','.join(names)}", f"--loglevel={log_level}", "--without-gossip"]
    if name:
        args.append(f"--hostname={name}@%h")
    if "gpu" in names:
        args += engine_pool()
    else:
        args += ["--pool=prefork", f"--concurrency={prep_processes(concurrency)}"]
    celery_app.worker_main(args)


@app.command()
def beat(log_level: str = "info") -> None:
    """Run Celery beat, the scheduler for periodic tasks (run exactly one): the sweeper (see
    RELIABILITY.md) and the reprocess entry (workers.beat)."""
    _logging(log_level)
    _log_servers("beat")
    from workers.celery_app import app as celery_app
    from workers.liveness import touch_on_publish

    get_settings().state_dir.mkdir(parents=True, exist_ok=True)  # beat keeps its schedule state there
    touch_on_publish(get_settings())  # the liveness file `vlmq probe beat --live` reads

    celery_app.start(["beat", f"--loglevel={log_level}"])


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply migrations (to head by default)."""
    from migrations import upgrade

    upgrade(get_settings().db.url, revision)
    console.print(f"database at revision {revision}")


Task = Literal["caption", "ocr", "qa", "grounding"]


@app.command()
def submit(
    files: Annotated[
        list[Path] | None,
        typer.Argument(exists=True, dir_okay=False, help="PDFs, images, office files or videos"),
    ] = None,
    prefix: Annotated[
        str | None, typer.Option(help="Instead of files: s3://bucket/prefix/**/*.pdf, listed as the job runs")
    ] = None,
    manifest: Annotated[
        str | None, typer.Option(help="Instead of files: s3://bucket/list.jsonl or .csv, one item a line")
    ] = None,
    incremental: Annotated[
        bool, typer.Option(help="--prefix/--manifest: skip what this tenant already has a result for")
    ] = True,
    prompt: Annotated[str | None, typer.Option(help="Prompt; for qa/grounding the question")] = None,
    task: Annotated[Task | None, typer.Option(help="Preset (default caption)")] = None,
    pages: Annotated[str | None, typer.Option(help='Page ranges, e.g. "1-3,7"')] = None,
    password: Annotated[str | None, typer.Option(help="Password of encrypted PDFs")] = None,
    longest_side: Annotated[int | None, typer.Option(help="Render size in pixels")] = None,
    dpi: Annotated[int | None, typer.Option(help="Render PDFs at this DPI instead")] = None,
    granularity: Annotated[
        Literal["page", "document"] | None,
        typer.Option(help="page: a result per page; document: first pages of a file in one prompt"),
    ] = None,
    text_hint: Annotated[bool, typer.Option(help="Add the PDF text layer to the prompt")] = False,
    max_new_tokens: Annotated[int | None, typer.Option(help="Output token limit per page")] = None,
    temperature: Annotated[float | None, typer.Option(help="0 = greedy")] = None,
    wait: Annotated[bool, typer.Option(help="Follow progress until the job is done")] = False,
    idempotency_key: Annotated[str | None, typer.Option(help="Retry-safe submission key")] = None,
    dataset_to: Annotated[
        str | None,
        typer.Option(help="Also write the dataset under this s3:// prefix (granted: inputs.write_grants)"),
    ] = None,
) -> None:
    """Upload files as one job (options: README "Inputs and options")."""
    from api.cli.client import Client
    from api.cli.progress import follow

    given = {
        "task": task, "pages": pages, "password": password, "longest_side": longest_side, "dpi": dpi,
        "granularity": granularity, "text_hint": text_hint or None,
        "max_new_tokens": max_new_tokens, "temperature": temperature,
    }  # fmt: skip
    opts = {k: v for k, v in given.items() if v is not None}
    source = _source(files or [], prefix, manifest, incremental)
    with Client.from_settings(get_settings()) as client:
        if source is None:
            job = client.submit_files(
                files or [], prompt=prompt, options=opts, idempotency_key=idempotency_key, dataset=dataset_to
            )
        else:
            body = {"source": source, "options": opts, **({"prompt": prompt} if prompt else {})}
            body |= {"dataset": {"prefix": dataset_to}} if dataset_to else {}
            job = client.submit(body, idempotency_key=idempotency_key)
        console.print(f"job [bold]{job['id']}[/] {job['status']} ({job['request_counts']['total']} items)")
        if wait:
            job = follow(client, job["id"], console)
            _exit_for(job)


def _source(
    files: list[Path], prefix: str | None, manifest: str | None, incremental: bool
) -> dict[str, Any] | None:
    """The job's source (--prefix or --manifest), or None for files; exactly one of the three."""
    given = [x for x in (bool(files), prefix is not None, manifest is not None) if x]
    if len(given) != 1:
        raise typer.BadParameter("give files, or --prefix, or --manifest (exactly one)")
    if prefix is not None:
        return {"prefix": prefix, "incremental": incremental}
    if manifest is not None:
        return {"manifest": manifest, "incremental": incremental}
    return None


@app.command()
def status(job_id: str) -> None:
    """Print a job's status as JSON."""
    from api.cli.client import Client

    with Client.from_settings(get_settings()) as client:
        console.print_json(json.dumps(client.job(job_id)))


@app.command()
def cancel(job_id: str) -> None:
    """Cancel a job: waiting items at once, in-flight ones as their workers notice."""
    from api.cli.client import Client

    with Client.from_settings(get_settings()) as client:
        console.print_json(json.dumps(client.cancel(job_id)))


@app.command()
def retry(job_id: str) -> None:
    """Re-queue a job's failed and expired items (only those) and reopen it."""
    from api.cli.client import Client

    with Client.from_settings(get_settings()) as client:
        console.print_json(json.dumps(client.retry(job_id)))


@app.command()
def watch(
    job_id: str,
    interval: Annotated[float, typer.Option(help="Seconds between status reads")] = 1.0,
    timeout: Annotated[float | None, typer.Option(help="Give up after this many seconds")] = None,
) -> None:
    """Follow a job with live progress bars (documents and pages: done, failed, rate, ETA)."""
    from api.cli.client import Client
    from api.cli.progress import follow

    console.print(f"job [bold]{job_id}[/]")
    with Client.from_settings(get_settings()) as client:
        _exit_for(follow(client, job_id, console, timeout=timeout, poll=interval))


@app.command()
def results(
    job_id: str,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout")
    ] = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="jsonl: one line per page; md: Markdown")] = (
        Format.jsonl
    ),
    history: Annotated[bool, typer.Option(help="Every result version, not only the current one")] = False,
) -> None:
    """Print (or write) a job's results as JSONL or Markdown."""
    from api.cli.client import Client
    from api.cli.render import to_markdown

    with Client.from_settings(get_settings()) as client:
        rows = list(client.results(job_id, history=history))
    if fmt is Format.md:
        text = to_markdown(job_id, rows)
    else:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if output:
        output.write_text(text)
        err.print(f"{len(rows)} results written to {output}")
    else:
        sys.stdout.write(text)


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
    group_size: Annotated[
        int, typer.Option(help="AWQ group: 128 (the published checkpoint's; TP 1), 64 (TP 1-2), 32 (TP 1-4)")
    ] = 128,
) -> None:
    """AWQ 4-bit (group 128, zero point) of a GLM-4.1V checkpoint, calibrated on your own pages."""
    from api.cli.quantize import run_quantize

    code = run_quantize(
        console, err, get_settings(), src, dst, calibration,
        samples=samples, device=device, prompt=prompt, group_size=group_size,
    )  # fmt: skip
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


register_reprocess(app)
register_config_doc(dev_app)
register_history(app)
register_soak(app)
register_probe(app)


def _exit_for(job: dict[str, object]) -> None:
    from api.cli.failures import ExitCode

    if job.get("status") != "completed":
        raise typer.Exit(ExitCode.ERROR)


def main() -> None:
    # The one place a failed command becomes its line on stderr and exit code (api.cli.failures).
    from api.cli.failures import run

    run(app)
