"""The CPU engine: transformers' Glm4vForConditionalGeneration, loaded once per worker process.

Used for development, CI and the demo with the tiny model; it runs the real GLM-4.1V architecture and
processor, so prompts, image tokens and decoding are the same code paths a real checkpoint takes.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from workers.inference.engine import FinishReason, GenerationOutput, GenerationRequest, strip_stop
from workers.inference.prompts import build_messages
from workers.media.clip import VideoClip

log = logging.getLogger(__name__)


def _cpu_threads() -> int:
    """The CPUs this process may run on. torch's default counts the host's cores, which in a
    container with a CPU set oversubscribes it; an explicit OMP_NUM_THREADS still wins."""
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    return max(1, len(os.sched_getaffinity(0)))


def processor_inputs(
    processor: Any, prompt: str, images: Sequence[Image.Image], video: VideoClip | None = None
) -> Any:
    """Model inputs for one prompt, built by the checkpoint's own processor and chat template.

    A video goes through the processor with its frames already sampled (``do_sample_frames=False``)
    and its metadata, from which the processor writes each pair of frames as
    ``<|begin_of_image|><|image|>...<|end_of_image|>`` followed by its timestamp in whole seconds,
    inside ``<|begin_of_video|>...<|end_of_video|>``. The tiny model's teaching uses this too.
    """
    if video is None:
        return processor.apply_chat_template(
            build_messages(prompt, images), add_generation_prompt=True, tokenize=True, return_dict=True,
            return_tensors="pt",
        )  # fmt: skip
    text = processor.apply_chat_template(
        build_messages(prompt, 0, video=True), add_generation_prompt=True, tokenize=False
    )
    return processor(
        text=[text], videos=[video.frames], video_metadata=[video.metadata()], do_sample_frames=False,
        return_tensors="pt",
    )  # fmt: skip


class TransformersEngine:
    name = "transformers"

    def __init__(self, model_path: str, model_id: str, device: str = "cpu", dtype: str = "float32") -> None:
        from transformers import AutoProcessor

        from workers.quantization.loading import load_glm4v

        t0 = time.monotonic()
        self.model_id = model_id
        self.device = device
        if device == "cpu":
            torch.set_num_threads(_cpu_threads())
        self.processor = AutoProcessor.from_pretrained(model_path, local_files_only=True)
        # AWQ checkpoints (`vlmq quantize`) too: unpacked to float, see workers.quantization.loading.
        model: Any = load_glm4v(model_path, getattr(torch, dtype))
        self.model = model.to(device).eval()
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])
        log.info("transformers engine loaded %s in %.1f s", model_path, time.monotonic() - t0)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        # One at a time: on CPU batching buys little and padding mixed image sizes costs memory.
        return [self._one(r) for r in requests]

    def _inputs(self, req: GenerationRequest) -> Any:
        return processor_inputs(self.processor, req.prompt, req.images, req.video).to(self.device)

    @torch.inference_mode()
    def _one(self, req: GenerationRequest) -> GenerationOutput:
        inputs = self._inputs(req)
        # Greedy passes no temperature at all: transformers warns about sampling flags it would ignore.
        sampling: dict[str, Any] = {"do_sample": False}
        if req.temperature > 0:
            sampling = {"do_sample": True, "temperature": req.temperature}
        out = self.model.generate(**inputs, max_new_tokens=req.max_new_tokens, **sampling)
        prompt_len = inputs["input_ids"].shape[1]
        new = out[0, prompt_len:].tolist()
        finish: FinishReason = "stop" if new and new[-1] in self.eos_ids else "length"
        return GenerationOutput(req.request_id, self._decode(new), prompt_len, len(new), finish)

    def _decode(self, token_ids: list[int]) -> str:
        # As the vLLM engine does: keep every tag whatever a tokenizer calls special (a real checkpoint's
        # tokenizer may mark <think> special), and drop only the stop token that ended the output.
        text: str = self.processor.tokenizer.decode(token_ids, skip_special_tokens=False)
        return strip_stop(text)
