"""Where a GPU worker's start goes (issue 27), read from its log: the worker's own phases
(workers.startup: process and imports, processor, vLLM engine, warm-up, database, writers) and the
lengths vLLM itself logs inside the engine phase (weights, torch.compile, profiling, CUDA graphs).

vLLM's messages are matched loosely (0.26's wording, checked against its source); a message not seen
is left out rather than guessed, and every matched line keeps its text for the reader."""

from __future__ import annotations

import json
import re
from typing import Any

from workers.startup import STARTUP

# name -> a message of vLLM 0.26 whose first number is that phase's seconds (the engine core's lines;
# vllm/model_executor/model_loader, v1/worker, compilation/backends and monitor, v1/engine/core.py)
VLLM_PHASES = {
    "weights": r"Loading weights took ([\d.]+) s",
    "model_loading": r"Model loading took [\d.]+ GiB (?:memory )?and ([\d.]+) s",
    "dynamo_transform": r"Dynamo bytecode transform time: ([\d.]+) s",
    "compile_load_cached": r"Directly load the compiled graph\(s\).*took ([\d.]+) s",
    "compile_graph": r"Compiling a graph for .*? takes ([\d.]+) s",
    "torch_compile_total": r"torch\.compile t(?:ook|akes) ([\d.]+) s in total",
    "memory_profiling": r"Memory profiling takes ([\d.]+) s",
    "cuda_graphs": r"Graph capturing finished in ([\d.]+) sec",
    "init_engine_total": r"init engine \(profile, create kv cache, warmup model\) took ([\d.]+) s",
    "init_engine_compilation": r"init engine \(profile.*\(compilation: ([\d.]+) s",
    "init_engine_encoder_compile": r"init engine \(profile.*encoder: ([\d.]+) s",
}
# Any other line that states a duration is kept too (up to MAX_LINES), for what the names above miss.
_DURATION = re.compile(r"\b\d+(?:\.\d+)? ?(?:s|secs?|seconds)\b")
MAX_LINES = 80


def breakdown(log: str) -> dict[str, Any]:
    """The worker's start as logged: ``worker`` (its own phases, seconds), ``vllm`` (vLLM's), and the
    lines that state a duration. Where a phase shows twice (two starts in one log), the last start's is
    kept."""
    worker: dict[str, Any] = {}
    vllm: dict[str, float] = {}
    lines: list[str] = []
    for line in log.splitlines():
        if STARTUP in line:
            worker = json.loads(line.split(STARTUP, 1)[1])
            continue
        found = {n: m.group(1) for n, pattern in VLLM_PHASES.items() if (m := re.search(pattern, line))}
        vllm |= {n: float(v.rstrip(".")) for n, v in found.items()}
        if (found or _DURATION.search(line)) and len(lines) < MAX_LINES:
            lines.append(line.strip()[-300:])
    return {"worker": worker, "vllm": vllm, "vllm_lines": lines}
