"""Helpers for bench/gpu/quantize.sh (on the lent GPU machine): calibration documents, and serving an
AWQ checkpoint through the GPU worker's own engine.

    python3 -m bench.gpu.quantize docs DIR --docs 8 --pages 4     # 8 PDFs of 4 text pages
    python3 -m bench.gpu.quantize serve MODEL [--taught]           # VllmEngine, one page, JSON line

``serve`` builds the engine exactly as `vlmq worker --queues gpu` does (VllmEngine from Settings) with
the published AWQ checkpoint's setting, quantization "awq". ``--taught`` also asks the taught tiny
model's two pages and reports whether the answers survived quantization.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from bench.pages import make_pdf, page_images
from jobs.config import Settings
from jobs.prompts.presets import DEFAULT
from workers.inference.engine import GenerationRequest


def write_docs(folder: Path, docs: int, pages: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(docs):
        (folder / f"doc-{i:02d}.pdf").write_bytes(make_pdf(pages, seed=100 + i))


def serve(model: Path, taught: bool, max_new_tokens: int) -> dict[str, Any]:
    from workers.inference.vllm_engine import VllmEngine

    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        model={"engine": "vllm", "path": str(model), "quantization": "awq", "thinking_budget": None,
               "max_model_len": 16384 if not taught else 4096,
               "gpu_memory_utilization": 0.85 if not taught else 0.3},
    )  # fmt: skip
    t0 = time.monotonic()
    engine = VllmEngine(settings)
    load = time.monotonic() - t0
    page = page_images([make_pdf(1, seed=7)], longest_side=1288)[0]
    t1 = time.monotonic()
    (out,) = engine.generate([GenerationRequest("page", DEFAULT.prompt, [page], max_new_tokens)])
    result: dict[str, Any] = {
        "model": str(model), "quantization": "awq", "load_s": round(load, 1),
        "generate_s": round(time.monotonic() - t1, 2), "prompt_tokens": out.prompt_tokens,
        "completion_tokens": out.completion_tokens, "finish_reason": out.finish_reason,
        "text_head": out.text[:120],
    }  # fmt: skip
    if taught:
        result["taught_answers_kept"] = _taught(engine)
    engine.shutdown()
    return result


def _taught(engine: Any) -> bool:
    from tests.fixtures.models import TARGETS, taught_pages

    pages = taught_pages()[: len(TARGETS)]
    reqs = [GenerationRequest(f"t{i}", DEFAULT.prompt, [img], 64) for i, img in enumerate(pages)]
    return [o.text for o in engine.generate(reqs)] == TARGETS


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("docs")
    d.add_argument("folder", type=Path)
    d.add_argument("--docs", type=int, default=8)
    d.add_argument("--pages", type=int, default=4)
    s = sub.add_parser("serve")
    s.add_argument("model", type=Path)
    s.add_argument("--taught", action="store_true")
    s.add_argument("--max-new-tokens", type=int, default=64)
    a = ap.parse_args()
    if a.cmd == "docs":
        write_docs(a.folder, a.docs, a.pages)
    else:
        print(json.dumps(serve(a.model, a.taught, a.max_new_tokens)), flush=True)


if __name__ == "__main__":
    main()
