"""Baseline: the vLLM engine alone, offline (LLM.generate), on exactly the pages the system gets."""

from __future__ import annotations

import time
from typing import Any

from bench.pages import documents, page_images
from jobs.presets import DEFAULT
from workers.inference.prompts import build_messages


def run_raw(
    model: str, pages: int, per_doc: int, max_tokens: int, side: int, quantization: str | None
) -> dict[str, Any]:
    from transformers import AutoProcessor
    from vllm import LLM, SamplingParams

    images = page_images(documents(pages, per_doc), side)
    prompt = AutoProcessor.from_pretrained(model).apply_chat_template(
        build_messages(DEFAULT.prompt, 1), tokenize=False, add_generation_prompt=True
    )
    t0 = time.monotonic()
    llm = LLM(
        model=model,
        quantization=quantization,
        max_model_len=16384,
        gpu_memory_utilization=0.85,
        limit_mm_per_prompt={"image": 1, "video": 1},
        enable_prefix_caching=True,
        seed=0,
        max_num_seqs=256,  # as the GPU worker's default
    )
    load_s = time.monotonic() - t0
    sp = SamplingParams(max_tokens=max_tokens, temperature=0.0, skip_special_tokens=False)
    reqs = [{"prompt": prompt, "multi_modal_data": {"image": img}} for img in images]
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
