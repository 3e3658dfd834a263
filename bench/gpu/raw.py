"""Baseline: the vLLM engine alone, offline (LLM.generate), on exactly the pages the system gets."""

from __future__ import annotations

import time
from typing import Any

from bench.gpu.offline import offline_llm, page_requests
from bench.pages import documents, page_images


def run_raw(
    model: str, pages: int, per_doc: int, max_tokens: int, side: int, quantization: str | None
) -> dict[str, Any]:
    from vllm import SamplingParams

    reqs = page_requests(model, page_images(documents(pages, per_doc), side))
    t0 = time.monotonic()
    llm = offline_llm(model, quantization)
    load_s = time.monotonic() - t0
    sp = SamplingParams(max_tokens=max_tokens, temperature=0.0, skip_special_tokens=False)
    llm.generate(reqs[:2], sp, use_tqdm=False)  # warm-up, as the system's worker is warm too
    t1 = time.monotonic()
    outs = llm.generate(reqs, sp, use_tqdm=False)
    gen_s = time.monotonic() - t1
    out_tok = sum(len(o.outputs[0].token_ids) for o in outs)
    return {
        "what": "raw", "pages": len(reqs), "load_s": round(load_s, 1), "wall_s": round(gen_s, 2),
        "prompt_tokens_per_page": len(outs[0].prompt_token_ids or []), "output_tokens": out_tok,
        "pages_per_s": round(len(reqs) / gen_s, 3), "output_tok_per_s": round(out_tok / gen_s, 1),
    }  # fmt: skip
