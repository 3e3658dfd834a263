"""Run one GPU benchmark and append its figures as a JSON line: `python -m bench.gpu.run WHAT --out F`.

WHAT: raw (vLLM's offline LLM alone), engine (vlmq's VllmEngine alone: the GPU worker's engine without
Celery, S3 or Postgres), system (REST to stored results), serve (the system through `vllm serve` and the
"openai" engine), runbatch (`vllm run-batch` on one size's pages), fixed / continuous (varying output
lengths).
Run them in one lease on one model so the ratios compare like with like; bench/gpu/report.py turns the
lines into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["raw", "engine", "system", "serve", "runbatch", "fixed", "continuous"])
    ap.add_argument("--model", required=True)
    ap.add_argument("--quantization", default=None)
    ap.add_argument("--pages", type=int, default=256, help="fixed/continuous/engine: pages")
    ap.add_argument("--sizes", default="256", help="raw/system: pages of each run in turn, e.g. 256,1024")
    ap.add_argument("--per-doc", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=1024)
    ap.add_argument("--side", type=int, default=1288)
    ap.add_argument("--in-flight", type=int, default=0, help="system: batches in flight (0: auto)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--prep-procs", type=int, default=os.cpu_count(), help="system: prep worker processes")
    ap.add_argument("--prep-nice", default=None, help="system: prep's CPU niceness for each size, e.g. 0,10")
    ap.add_argument("--tp", type=int, default=1, help="raw/system: GPUs per engine (tensor parallel)")
    ap.add_argument("--gpu-workers", type=int, default=1, help="system: GPU workers (data parallel)")
    ap.add_argument("--slots", type=int, default=64, help="fixed/continuous: sequences at once")
    ap.add_argument("--threads", type=int, default=32, help="continuous: task threads feeding")
    ap.add_argument("--profile", type=Path, default=None, help="system: py-spy raw profile of the worker")
    ap.add_argument("--fair-pages", type=int, default=0, help="system: then a bulk job with small jobs")
    ap.add_argument("--small-every", type=float, default=5.0, help="system: seconds between small jobs")
    ap.add_argument("--video-every", type=int, default=0, help="system: every k-th small job a video")
    ap.add_argument("--restart", action="store_true", help="system: last, restart the GPU worker (timed)")
    ap.add_argument("--server-in-flight", type=int, default=512, help="serve: the worker's requests at once")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    t0 = time.time()

    def write(line: dict[str, Any]) -> None:
        """One run's figures, appended (and printed) as soon as it ends."""
        import torch

        common = {
            "gpu": torch.cuda.get_device_name(0),
            "host": platform.node(),
            "started": t0,
            "seconds": round(time.time() - t0, 1),
            "args": {k: str(v) for k, v in vars(a).items()},
        }
        with a.out.open("a") as f:
            f.write(json.dumps(line | common) + "\n")
        print("RESULT " + json.dumps(line | common), flush=True)

    if a.what == "raw":
        from bench.gpu.raw import run_raw

        run_raw(a.model, _ints(a.sizes), a.per_doc, a.max_tokens, a.side, a.quantization, a.tp, emit=write)
    elif a.what == "system":
        from bench.gpu.system import run_system

        run_system(
            a.model,
            _ints(a.sizes),
            a.per_doc,
            a.max_tokens,
            a.side,
            a.quantization,
            a.in_flight,
            a.batch,
            prep_procs=a.prep_procs,
            prep_nice=_ints(a.prep_nice) if a.prep_nice else None,
            tp=a.tp,
            gpu_workers=a.gpu_workers,
            profile=a.profile,
            fair_pages=a.fair_pages,
            small_every=a.small_every,
            video_every=a.video_every,
            restart=a.restart,
            emit=write,
            logs_to=a.out.parent,
        )
    elif a.what == "serve":
        from bench.gpu.serve import run_serve

        run_serve(a.model, _ints(a.sizes), a.per_doc, a.max_tokens, a.side, a.quantization,
                  a.server_in_flight, emit=write, logs_to=a.out.parent)  # fmt: skip
    elif a.what == "runbatch":
        from bench.gpu.raw import doc_seeds
        from bench.gpu.runbatch import run_batch

        sizes = _ints(a.sizes)  # the lease's sizes: the pages are those of the run of --pages pages
        first = doc_seeds(sizes, a.per_doc)[sizes.index(a.pages)]
        write(run_batch(a.model, a.pages, first, a.per_doc, a.max_tokens, a.side, a.quantization))
    elif a.what == "engine":
        from bench.gpu.feed import run_engine

        write(run_engine(a.model, a.pages, a.per_doc, a.max_tokens, a.side, a.quantization))
    elif a.what == "fixed":
        from bench.gpu.feed import run_fixed

        write(run_fixed(a.model, a.pages, a.slots, a.side, a.quantization))
    else:
        from bench.gpu.feed import run_continuous

        write(run_continuous(a.model, a.pages, a.slots, a.batch, a.threads, a.side, a.quantization))


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


if __name__ == "__main__":
    main()
