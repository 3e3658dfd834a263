"""A video through the vLLM engine: the tiny model taught one answer for the clip prep makes of
clip-3s.mp4 gives it exactly, so vLLM's GLM-4.1V processor got the same frames, sizes and timestamps
as the CPU engine's (tests/integration/test_video_engine.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from jobs.config import ModelSettings, Settings
from jobs.prompts.reasoning import split_output
from tests.fixtures.video_model import VIDEO_PROMPT, VIDEO_TARGET, taught_clip, taught_video_model
from workers.inference.engine import GenerationRequest


@pytest.fixture(scope="module")
def engine() -> Iterator[object]:
    from workers.inference.vllm_engine import VllmEngine

    model = ModelSettings(
        engine="vllm", path=str(taught_video_model()), model_id="tiny-video", dtype="bfloat16",
        max_model_len=8192, gpu_memory_utilization=0.3, thinking_budget=None,
    )  # fmt: skip
    eng = VllmEngine(Settings(_env_file=None, model=model))  # type: ignore[call-arg]
    yield eng
    eng.shutdown()


def test_taught_video_answers_exactly(engine) -> None:  # type: ignore[no-untyped-def]
    video = taught_clip()
    (out,) = engine.generate([GenerationRequest("v1", VIDEO_PROMPT, (), 64, video=video)])
    assert out.text == VIDEO_TARGET, out.text
    assert out.prompt_tokens > 3 * 4 * 6  # three frame pairs of 4 x 6 merged patches, plus text
    parsed = split_output(out.text)
    assert (parsed.reasoning, parsed.answer) == ("A square moves.", "Left to right")


def test_video_and_pages_share_the_engine(engine) -> None:  # type: ignore[no-untyped-def]
    """Video and image requests in flight together (the engine allows one video per prompt)."""
    from PIL import Image

    page = Image.new("RGB", (224, 308), "white")
    reqs = [
        GenerationRequest("v", VIDEO_PROMPT, (), 64, video=taught_clip()),
        GenerationRequest("p", "Describe this page.", [page], 8),
    ]
    outs = engine.generate(reqs)
    assert outs[0].text == VIDEO_TARGET and outs[1].completion_tokens >= 1
