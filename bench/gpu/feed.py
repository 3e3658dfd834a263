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

from bench.gpu.engine_log import Captured, loop_series, read_log, stats_series, summary
from bench.gpu.offline import offline_llm, page_requests
from bench.gpu.raw import STATS_SECONDS
from bench.pages import documents, page_images
from jobs.config import ModelSettings, Settings
from jobs.prompts.presets import DEFAULT
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
    wrapper (AsyncLLM, prompt building, output decoding) from the rest of the system; with the engine's
    statistics on, as in the system run, the delivery lag and the event loop's series say whether the
    engine's front end keeps up when nothing else runs in its process."""
    engine = _vlmq_engine(model, quantization, max_num_seqs=256, log_stats_seconds=STATS_SECONDS)
    # Two sets of pages: the second run must not find the first one's prompts in the prefix cache.
    images = page_images(documents(2 * pages, per_doc), side)
    reqs = [GenerationRequest(f"p{i}", DEFAULT.prompt, [img], max_tokens) for i, img in enumerate(images)]
    runs = {
        "one_call": [reqs[:pages]],
        "threads": [reqs[pages + i : pages + i + 8] for i in range(0, pages, 8)],
    }
    figures: dict[str, Any] = {}
    walls: dict[str, float] = {}
    for name, batches in runs.items():
        with Captured("workers.inference.vllm_engine") as log:
            t0, t0_epoch = time.monotonic(), time.time()
            tokens = _fed(engine, batches, 1 if name == "one_call" else 32)
            wall = walls[name] = time.monotonic() - t0
        messages = [m for _, m in log.lines]
        timings, _ = read_log("\n".join(messages))
        figures[name] = {
            "wall_s": round(wall, 2), "pages_per_s": round(pages / wall, 3), "output_tokens": tokens,
            "engine": summary(timings, t0_epoch),
            "engine_loop": loop_series(messages, t0_epoch, t0_epoch + wall),
            "engine_stats": stats_series(log.lines, t0_epoch, t0_epoch + wall),
        }  # fmt: skip
    engine.shutdown()
    one = figures["one_call"]
    return _figures(
        "engine", walls["one_call"], one["output_tokens"], pages=pages, load_s=round(engine.load_seconds, 1),
        **figures,
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
