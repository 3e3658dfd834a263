"""The engine seam: what the inference task needs from a model, whatever runs it.

Two implementations: ``transformers_engine.TransformersEngine`` (CPU/dev/CI, tiny model) and
``vllm_engine.VllmEngine`` (GPU); plus ``fake_engine.FakeEngine``, a fixed-latency stand-in with canned
output for tests and benchmarks (``VLMQ_MODEL__ENGINE=fake``), never a model.

An engine may also have ``abort(request_ids)``: stop those requests now (their job was cancelled); the
batch's ``generate`` then returns early, and its outputs are thrown away. Engines without it finish the
batch, and the worker throws the outputs away after.
An engine may also have ``needs_pixels = False``: it sends each page's stored PNG by its key
(``GenerationRequest.image_keys``; the "openai" engine's presigned URLs), so the worker downloads no
pixels for it and ``images`` is empty. Engines without it get the decoded pages.
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
    # The stored PNGs (BlobStore keys, prep's media) of the pages, in prompt order: beside ``images``, or
    # in their place for an engine that reads the stored pages itself (needs_pixels False).
    image_keys: Sequence[str] = ()

    def __post_init__(self) -> None:
        if self.images and self.image_keys and len(self.images) != len(self.image_keys):
            raise ValueError("image_keys name the stored pages behind images: one key a page")
        # GLM-4.1V's limits, which the API already enforces on requests (jobs.prompts.limits).
        check_media(self.page_count, 0 if self.video is None else 1)

    @property
    def page_count(self) -> int:
        return max(len(self.images), len(self.image_keys))


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


def needs_pixels(engine: Engine) -> bool:
    """Whether the worker must download and decode the pages for ``engine`` (see the module's note)."""
    return bool(getattr(engine, "needs_pixels", True))
