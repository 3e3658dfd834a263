"""Issue 26 on the GPU: `vllm serve` runs the model and the whole system reaches it through the "openai"
engine (a worker without a GPU), on the same pages as the raw engine and the in-process worker.

The server gets the raw baseline's engine settings (bench.gpu.offline), so the three differ only in who
holds the engine. vLLM's OpenAI server module stands in for the `vllm` script, which the GPU kit does
not install (the kit's README runs `vllm run-batch` the same way)."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from api.cli.processes import answers
from api.cli.servers import ManagedProcess, free_port, wait_until
from bench.gpu.system import run_system

SERVED = "bench-glm"


def server_command(model: str, quantization: str | None, port: int, max_num_seqs: int = 256) -> list[str]:
    """`vllm serve` with the raw baseline's engine settings."""
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
           "--served-model-name", SERVED, "--host", "127.0.0.1", "--port", str(port),
           "--max-model-len", "16384", "--gpu-memory-utilization", "0.85",
           "--limit-mm-per-prompt", json.dumps({"image": 1, "video": 1}), "--enable-prefix-caching",
           "--seed", "0", "--max-num-seqs", str(max_num_seqs)]  # fmt: skip
    return cmd + (["--quantization", quantization] if quantization else [])


def run_serve(
    model: str, sizes: list[int], per_doc: int, max_tokens: int, side: int, quantization: str | None,
    in_flight: int, emit: Callable[[dict[str, Any]], None] | None = None,
    command: Callable[[int], list[str]] | None = None, **system: Any,
) -> list[dict[str, Any]]:  # fmt: skip
    """The server started and timed to its first answer, then the system's runs through it, each line
    carrying ``server_start_s``; ``in_flight``: the worker's requests at once. ``command``: the server's
    command for a port (default: ``server_command``; CI runs tests.fixtures.openai_server instead);
    ``system``: more of run_system's arguments."""
    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="vlmq-serve-")) / "vllm-serve.log"
    cmd = command(port) if command else server_command(model, quantization, port)
    t0 = time.monotonic()
    with ManagedProcess("vllm-serve", cmd, log) as server:
        wait_until(lambda: answers(f"http://127.0.0.1:{port}/v1/models", [server]), "vllm serve", 900)
        start_s = round(time.monotonic() - t0, 1)
        print(f"[serve] vllm serve healthy in {start_s} s ({log})", file=sys.stderr, flush=True)
        env = {"VLMQ_MODEL__OPENAI__BASE_URLS": f"http://127.0.0.1:{port}/v1",
               "VLMQ_MODEL__OPENAI__SERVED_MODEL": SERVED,
               "VLMQ_MODEL__OPENAI__MAX_IN_FLIGHT": str(in_flight)}  # fmt: skip

        def tagged(line: dict[str, Any]) -> None:
            line["server_start_s"] = start_s
            if emit:
                emit(line)

        try:
            return run_system(model, sizes, per_doc, max_tokens, side, quantization, engine="openai",
                              engine_env=env, emit=tagged, **system)  # fmt: skip
        finally:
            if system.get("logs_to") is not None:
                shutil.copy(log, system["logs_to"] / log.name)
