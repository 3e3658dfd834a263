"""``vlmq demo`` and ``vlmq dev up``: start what is missing, then run the bundled sample end to end.

The demo runs the real system: embedded PostgreSQL, Redis and an S3 server (or the configured ones),
the API and two Celery workers as separate processes, the sample PDF uploaded over HTTP. With no model
configured it builds the tiny GLM-4.1V-shaped model and teaches it the sample's three pages (about a
quarter of a minute, once), so the output shows the reasoning/answer split on real model output.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from api.auth import load_keys
from api.cli.client import Client
from api.cli.devstack import DevStack, free_port
from api.cli.lifetime import stop_on_signals
from api.cli.processes import start_vlmq, wait_healthy
from api.cli.progress import follow
from jobs.config import Settings, get_settings
from jobs.prompts.presets import DEFAULT
from jobs.samples import SAMPLE_ANSWERS, SAMPLE_NAME, sample_pdf_bytes

DEMO_SIDE = 448  # the demo renders pages small so the CPU model answers in about a second each


def _fresh_settings() -> Settings:
    # Ignore a dev.env left by another run: the demo decides itself what to start.
    return Settings(_env_file=(".env",))  # type: ignore[call-arg]


def ensure_model(path: Path, console: Console, teach: bool = True) -> Path:
    """Build (and teach) the tiny model at ``path`` unless a model is already there."""
    from workers.inference import tiny_model

    if (path / "config.json").exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=".building-"))
    try:
        with console.status(f"Building the tiny GLM-4.1V-shaped model in {path} ..."):
            tiny_model.build_tiny_model(tmp)
        if teach:
            _teach_sample(tmp, console)
        tmp.rename(path)  # atomic: an interrupted build never leaves half a model at ``path``
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def _teach_sample(model_dir: Path, console: Console) -> None:
    """Teach the sample's pages, rendered exactly as the demo job renders them."""
    from workers.inference import tiny_model
    from workers.media.images import decode_image
    from workers.media.pdf import render_pdf

    pages = [decode_image(p.png) for p in render_pdf(sample_pdf_bytes(), longest_side=DEMO_SIDE, max_pages=9)]
    examples = [(img, DEFAULT.prompt, answer) for img, answer in zip(pages, SAMPLE_ANSWERS, strict=True)]
    with console.status("Teaching it the sample's pages (once; about 15 s on 2 cores) ..."):
        figures = tiny_model.teach(model_dir, examples, steps=60 * len(examples))
    console.print(f"[dim]taught in {figures['seconds']} s, final loss {figures['final_loss']:.4f}[/]")


@contextmanager
def _services(console: Console, settings: Settings) -> Iterator[dict[str, str]]:
    # SIGTERM/SIGHUP stop the servers as Ctrl-C does; a SIGKILL takes them along (api.cli.lifetime).
    with stop_on_signals(), DevStack(settings) as stack:
        with console.status("Starting embedded services for whatever is not configured ..."):
            env = stack.start()
        for key in sorted(env):
            if not key.endswith(("ACCESS_KEY_ID", "SECRET_ACCESS_KEY")):
                console.print(f"[dim]{key}={env[key]}[/]")
        os.environ.update(env)
        get_settings.cache_clear()
        from migrations import upgrade

        upgrade(get_settings().db.url)
        yield env


def dev_stack_forever(console: Console) -> None:
    """Until Ctrl-C, SIGTERM or SIGHUP (even one that comes while the servers start): then every
    server is stopped and the command ends with status 0."""
    try:
        with _services(console, _fresh_settings()):
            console.print(
                "[green]Services up and migrated.[/] Other `vlmq` commands here use .vlmq/dev.env. "
                "Ctrl-C (or SIGTERM, SIGHUP) stops."
            )
            while True:
                time.sleep(3600)
    except KeyboardInterrupt as e:  # Ctrl-C, or lifetime.Stopped: the servers are stopped by now
        console.print(f"servers stopped ({e or 'Ctrl-C'})")


def run_demo(console: Console, max_new_tokens: int = 96, show_pages: bool = True) -> dict[str, Any]:
    t0 = time.monotonic()
    settings = _fresh_settings()
    model = Path(settings.model.path)
    if settings.model.engine == "transformers" and model == Path(Settings().model.path):
        ensure_model(model, console)
        console.print(
            "[dim]model: the tiny GLM-4.1V-shaped model (random weights, taught the sample's pages); "
            "set VLMQ_MODEL__PATH to GLM-4.1V-9B-Thinking for real answers[/]"
        )
    with _services(console, settings):
        settings = get_settings()
        port = free_port()
        key = next(iter(load_keys(settings)[0]))  # the same rule the API applies (makes the dev key)
        logs = settings.state_dir / "logs"
        procs = list(start_vlmq(dict(os.environ), logs, port).values())
        console.print(f"[dim]api and workers started; logs in {logs}[/]")
        try:
            with Client(f"http://127.0.0.1:{port}", key) as client:
                with console.status("Waiting for the API and the workers ..."):
                    wait_healthy(f"http://127.0.0.1:{port}", procs)
                job = _submit_and_follow(client, console, max_new_tokens)
                if show_pages:
                    _print_results(console, list(client.results(job["id"])))
        finally:
            for p in reversed(procs):
                p.stop()
    console.print(f"[bold]demo finished in {time.monotonic() - t0:.1f} s[/] (job {job['status']})")
    return job


def _submit_and_follow(client: Client, console: Console, max_new_tokens: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        pdf = Path(d) / SAMPLE_NAME
        pdf.write_bytes(sample_pdf_bytes())
        opts = {"max_new_tokens": max_new_tokens, "longest_side": DEMO_SIDE}
        job = client.submit_files([pdf], options=opts)
    console.print(f"submitted {SAMPLE_NAME} as job [bold]{job['id']}[/]")
    return follow(client, job["id"], console, timeout=600)


def _print_results(console: Console, lines: list[dict[str, Any]]) -> None:
    for line in lines:
        title = f"{line['custom_id']} page {line['page']}  [{line['status']}]"
        if line.get("error"):
            console.print(Panel(f"[red]{line['error']['code']}: {line['error']['message']}[/]", title=title))
            continue
        table = Table.grid(padding=(0, 2))
        table.add_row("[bold]answer[/]", line.get("answer") or "[red](none)[/]")
        table.add_row("[dim]reasoning[/]", f"[dim]{line.get('reasoning') or ''}[/]")
        usage = line.get("usage") or {}
        flags = ", ".join(line.get("flags") or []) or "none"
        tokens = f"{usage.get('prompt_tokens')} in, {usage.get('completion_tokens')} out"
        table.add_row("[dim]tokens[/]", f"[dim]{tokens}; flags: {flags}; model {line.get('model_id')}[/]")
        console.print(Panel(table, title=title))
