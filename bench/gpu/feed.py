"""Continuous feeding vs a fixed-batch loop when output lengths vary widely.

Both run the same requests (same pages, same per-request output lengths, EOS ignored so each request
produces exactly its length), and both engines run at most ``slots`` sequences at once:
- fixed: ``LLM.generate`` on batches of ``slots`` one after another; each batch waits for its longest.
- continuous: vlmq's engine as the GPU worker runs it, fed by task threads with batches of ``batch``;
  more requests are queued than there are slots, so a finished request's slot is refilled at once.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

from bench.gpu.offline import offline_llm, page_requests
from bench.pages import documents, page_images
from jobs.config import ModelSettings, Settings
from jobs.presets import DEFAULT
from workers.inference.engine import GenerationRequest


def lengths(n: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)  # widely varying: most short, some very long (like thinking output)
    return [rng.choice((64, 128, 256, 512, 2048)) for _ in range(n)]


def _figures(what: str, wall: float, tokens: int, **extra: Any) -> dict[str, Any]:
    return {"what": what, "wall_s": round(wall, 2), "output_tokens": tokens,
            "output_tok_per_s": round(tokens / wall, 1), **extra}  # fmt: skip


def run_fixed(model: str, n: int, slots: int, side: int, quantization: str | None) -> dict[str, Any]:
    from vllm import SamplingParams

    reqs = page_requests(model, page_images(documents(n, 8), side)[:n])
    llm = offline_llm(model, quantization, max_num_seqs=slots)
    sps = [SamplingParams(max_tokens=m, temperature=0.0, ignore_eos=True) for m in lengths(n)]
    llm.generate(reqs[:2], sps[:2], use_tqdm=False)
    t0, tokens = time.monotonic(), 0
    for i in range(0, n, slots):
        outs = llm.generate(reqs[i : i + slots], sps[i : i + slots], use_tqdm=False)
        tokens += sum(len(o.outputs[0].token_ids) for o in outs)
    return _figures("fixed", time.monotonic() - t0, tokens, n=n, slots=slots)


def _vlmq_engine(model: str, quantization: str | None, **extra: Any) -> Any:
    from workers.inference.vllm_engine import VllmEngine

    cfg = {"engine": "vllm", "path": model, "quantization": quantization, **extra}
    return VllmEngine(Settings(_env_file=None, model=ModelSettings(**cfg)))  # type: ignore[call-arg]


def _fed(engine: Any, batches: list[list[GenerationRequest]], threads: int) -> int:
    """Feed ``batches`` to the engine from ``threads`` task threads, as a GPU worker's pool does."""
    todo, done, lock = list(batches), [], threading.Lock()

    def task_thread() -> None:  # like a Celery task thread: take the next batch, run it, repeat
        while True:
            with lock:
                if not todo:
                    return
                b = todo.pop(0)
            tokens = sum(o.completion_tokens for o in engine.generate(b))
            with lock:
                done.append(tokens)

    pool = [threading.Thread(target=task_thread) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sum(done)


def run_engine(
    model: str, pages: int, per_doc: int, max_tokens: int, side: int, quantization: str | None
) -> dict[str, Any]:
    """vlmq's engine alone on the raw baseline's inputs: once with every request in one call, once fed
    by 32 task threads x 8 pages as the GPU worker does. Compared with raw, this isolates the engine
    wrapper (AsyncLLM, prompt building, output decoding) from the rest of the system."""
    engine = _vlmq_engine(model, quantization, max_num_seqs=256)
    # Two sets of pages: the second run must not find the first one's prompts in the prefix cache.
    images = page_images(documents(2 * pages, per_doc), side)
    reqs = [GenerationRequest(f"p{i}", DEFAULT.prompt, [img], max_tokens) for i, img in enumerate(images)]
    first, second = reqs[:pages], reqs[pages:]
    t0 = time.monotonic()
    tokens = _fed(engine, [first], 1)
    one_call = time.monotonic() - t0
    t1 = time.monotonic()
    threaded = _fed(engine, [second[i : i + 8] for i in range(0, len(second), 8)], 32)
    fed = time.monotonic() - t1
    engine.shutdown()
    return _figures(
        "engine", one_call, tokens, pages=pages, pages_per_s=round(pages / one_call, 3),
        load_s=round(engine.load_seconds, 1), threads_wall_s=round(fed, 2),
        threads_pages_per_s=round(pages / fed, 3), threads_output_tokens=threaded,
    )  # fmt: skip


def run_continuous(
    model: str, n: int, slots: int, batch: int, threads: int, side: int, quantization: str | None
) -> dict[str, Any]:
    # thinking_budget None and EOS ignored: exact lengths, as in the fixed loop.
    engine = _vlmq_engine(model, quantization, thinking_budget=None, max_num_seqs=slots, ignore_eos=True)
    images = page_images(documents(n, 8), side)[:n]
    reqs = [
        GenerationRequest(f"r{i}", DEFAULT.prompt, [img], m)
        for i, (img, m) in enumerate(zip(images, lengths(n), strict=True))
    ]
    t0 = time.monotonic()
    tokens = _fed(engine, [reqs[i : i + batch] for i in range(0, n, batch)], threads)
    wall = time.monotonic() - t0
    engine.shutdown()
    return _figures("continuous", wall, tokens, n=n, slots=slots, batch=batch, threads=threads)
