"""Where an inference worker's start goes: seconds from the process's own start to each phase's end.

A fleet that scales GPU workers up and down lives on their start time (issue 27): the worker prints one
line with these phases once it is ready, the ready file and the benchmark read them, and vLLM's own log
lines say how the engine phase divides further (weights, torch.compile, profiling, CUDA graphs: the GPU
benchmark's bench.gpu.startup reads those).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

STARTUP = "vlmq worker: start phases"  # the line's prefix: what the benchmark looks for


def process_age() -> float | None:
    """Seconds since the kernel started this process (Linux: /proc), so the interpreter's own start and
    the imports before any line of vlmq ran are counted too; None where /proc says nothing."""
    try:
        with open("/proc/self/stat") as f:
            # Field 22 (starttime, clock ticks after boot); the command name before it may hold spaces.
            started = int(f.read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
        with open("/proc/uptime") as f:  # seconds after boot, the same origin
            uptime = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return round(uptime - started, 2)


def cache_env(root: str) -> dict[str, str]:
    """Every compile and JIT cache of a vLLM engine under one directory (``model.compile_cache_dir``, a
    volume that outlives the machine): vLLM's torch.compile artifacts, and also Triton's kernels, torch
    inductor's and FlashInfer's JIT, which otherwise sit in the home and /tmp of a machine that a fleet
    throws away. Measured (BENCHMARKS.md, session 13): a fresh machine's first start spent 143 s after its
    CUDA graphs were captured, a restart on the same machine 9 s."""
    base = Path(root)
    return {
        "VLLM_CACHE_ROOT": str(base),
        "TRITON_CACHE_DIR": str(base / "triton"),
        "TORCHINDUCTOR_CACHE_DIR": str(base / "inductor"),
        "FLASHINFER_WORKSPACE_BASE": str(base / "flashinfer"),  # FlashInfer keeps .cache/flashinfer there
    }


class Phases:
    """Named marks in the order they end; each phase's length is the time since the mark before it,
    the first counted from the process's start (``process_age``) where that is known."""

    def __init__(self) -> None:
        age = process_age()
        self._t0 = time.monotonic() - (age or 0.0)
        self._last = self._t0
        self.marks: dict[str, float] = {}

    def mark(self, name: str) -> None:
        now = time.monotonic()
        self.marks[name] = round(now - self._last, 2)
        self._last = now

    def add(self, parts: dict[str, float], rest: str) -> None:
        """Phases measured elsewhere (the engine's own), each a length, ending now; what they leave of
        the time since the last mark is ``rest``."""
        now = time.monotonic()
        self.marks.update({k: round(v, 2) for k, v in parts.items()})
        self.marks[rest] = round(max(0.0, now - self._last - sum(parts.values())), 2)
        self._last = now

    @property
    def total(self) -> float:
        return round(self._last - self._t0, 2)

    def line(self) -> str:
        return f"{STARTUP} {json.dumps({'total_s': self.total, **self.marks})}"
