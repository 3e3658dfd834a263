"""Baseline: the vLLM engine alone, offline (LLM.generate), on exactly the pages the system gets."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from bench.gpu.engine_log import Captured, stats_series, summary
from bench.gpu.offline import offline_llm, page_requests
from bench.pages import documents, make_pdf, page_images

STATS_SECONDS = 1.0  # the engine's throughput line, every second, raw and system alike


def run_raw(
    model: str, sizes: list[int], per_doc: int, max_tokens: int, side: int, quantization: str | None,
    tp: int = 1, emit: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """One engine, one run per size in turn (each on its own documents: ``doc_seeds``); ``tp`` GPUs.
    ``emit``: called with each run's figures as soon as it ends (bench.gpu.system's too)."""
    os.environ.setdefault("VLLM_LOG_STATS_INTERVAL", str(STATS_SECONDS))
    from vllm import SamplingParams

    from workers.inference.vllm_engine import request_timing

    t0 = time.monotonic()
    llm = offline_llm(model, quantization, log_stats=True, tensor_parallel_size=tp)
    load_s = time.monotonic() - t0
    sp = SamplingParams(max_tokens=max_tokens, temperature=0.0, skip_special_tokens=False)
    warm = page_requests(model, page_images([make_pdf(2, seed=999_999)], side))
    llm.generate(warm, sp, use_tqdm=False)  # warm-up, as the system's worker is warm too
    results = []
    for pages, first in zip(sizes, doc_seeds(sizes, per_doc), strict=True):
        reqs = page_requests(model, page_images(documents(pages, per_doc, first), side))
        with Captured() as log:
            t1, t1_epoch = time.monotonic(), time.time()
            outs = llm.generate(reqs, sp, use_tqdm=False)
            gen_s = time.monotonic() - t1
        out_tok = sum(len(o.outputs[0].token_ids) for o in outs)
        timings = [t for o in outs if (t := request_timing(o)) is not None]
        results.append(res := {
            "what": "raw", "tp": tp, "pages": len(reqs), "load_s": round(load_s, 1),
            "wall_s": round(gen_s, 2),
            "prompt_tokens_per_page": len(outs[0].prompt_token_ids or []), "output_tokens": out_tok,
            "pages_per_s": round(len(reqs) / gen_s, 3), "output_tok_per_s": round(out_tok / gen_s, 1),
            "engine": summary(timings, t1_epoch),
            "engine_stats": stats_series(log.lines, t1_epoch, t1_epoch + gen_s),
        })  # fmt: skip
        if emit:
            emit(res)
    return results


def doc_seeds(sizes: list[int], per_doc: int) -> list[int]:
    """The first document seed of each run: runs in one lease never share a page."""
    firsts, n = [], 0
    for pages in sizes:
        firsts.append(n)
        n += pages // per_doc
    return firsts
