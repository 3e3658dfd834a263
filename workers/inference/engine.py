"""The engine seam: what the inference task needs from a model, whatever runs it.

Two implementations: ``transformers_engine.TransformersEngine`` (CPU/dev/CI, tiny model) and
``vllm_engine.VllmEngine`` (GPU); plus ``fake_engine.FakeEngine``, a fixed-latency stand-in with canned
output for tests and benchmarks (``VLMQ_MODEL__ENGINE=fake``), never a model.

An engine may also have ``abort(request_ids)``: stop those requests now (their job was cancelled); the
batch's ``generate`` then returns early, and its outputs are thrown away. Engines without it finish the
batch, and the worker throws the outputs away after.
Engines return the raw decoded text (special tokens such as ``<|endoftext|>`` removed, ``<think>`` and
``<answer>`` tags kept); ``jobs.prompts.reasoning`` splits it, the same way for every engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from PIL import Image

from jobs.prompts.limits import check_media
from workers.media.clip import VideoClip

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class GenerationRequest:
    request_id: str
    prompt: str  # the user's text; the engine wraps it in GLM-4.1V's chat template
    images: Sequence[Image.Image] = field(default_factory=tuple)
    max_new_tokens: int = 1024
    temperature: float = 0.0
    video: VideoClip | None = None  # sampled frames + timestamps; never with images (see __post_init__)
    priority: int = 0  # its claim's turn (jobs.scheduling.fairness): lower is served sooner

    def __post_init__(self) -> None:
        # GLM-4.1V's limits, which the API already enforces on requests (jobs.prompts.limits).
        check_media(len(self.images), 0 if self.video is None else 1)


@dataclass(frozen=True)
class GenerationOutput:
    request_id: str
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason
    flags: tuple[str, ...] = ()  # engine-side facts, e.g. "thinking_budget_reached"


# Turn-ending tokens that may close a text decoded with special tokens kept.
STOP_TEXT = ("<|endoftext|>", "<|user|>", "<|observation|>")


def strip_stop(text: str) -> str:
    """Drop the stop token that ended the output; every other token, tags included, is kept."""
    for tok in STOP_TEXT:
        if text.endswith(tok):
            return text[: -len(tok)]
    return text


class Engine(Protocol):
    """A loaded model. Built once per worker process; ``generate`` may be called many times."""

    model_id: str
    name: str  # "transformers" | "vllm" | "fake"

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        """One output per request, in the same order. Raises on engine failure (whole batch)."""
        ...
