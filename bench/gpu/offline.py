"""The raw engine as the baselines use it: vLLM's offline LLM with the GPU worker's settings, and the
page requests in exactly the form the worker sends them."""

from __future__ import annotations

from typing import Any

from PIL import Image

from jobs.prompts.presets import DEFAULT
from workers.inference.prompts import build_messages


def offline_llm(
    model: str, quantization: str | None, max_num_seqs: int = 256, log_stats: bool = False,
    tensor_parallel_size: int = 1,
) -> Any:  # fmt: skip
    from vllm import LLM

    return LLM(
        model=model,
        quantization=quantization,
        max_model_len=16384,
        gpu_memory_utilization=0.85,
        limit_mm_per_prompt={"image": 1, "video": 1},
        enable_prefix_caching=True,
        seed=0,
        max_num_seqs=max_num_seqs,
        tensor_parallel_size=tensor_parallel_size,
        disable_log_stats=not log_stats,  # on: per-request timestamps and vLLM's throughput line
    )


def page_requests(model: str, images: list[Image.Image]) -> list[dict[str, Any]]:
    from transformers import AutoProcessor

    prompt = AutoProcessor.from_pretrained(model).apply_chat_template(
        build_messages(DEFAULT.prompt, 1), tokenize=False, add_generation_prompt=True
    )
    return [{"prompt": prompt, "multi_modal_data": {"image": img}} for img in images]
