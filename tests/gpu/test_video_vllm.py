"""A video clip in vLLM 0.26's GLM-4.1V, given as ``vllm_video_input`` builds it: vLLM expands the prompt
exactly as the transformers processor does (frames, timestamps), and the tiny model taught the clip
answers it exactly. Frames are made with numpy: the GPU machine needs no video decoder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.models import CACHE, cached_taught_model
from workers.inference import tiny_model
from workers.inference.prompts import build_messages
from workers.inference.transformers_engine import processor_inputs
from workers.inference.video_inputs import vllm_video_input
from workers.media.clip import VideoClip

PROMPT = "What happens in this video?"
TARGET = "<think>A square moves.</think><answer>Left to right</answer>"


def square_clip() -> VideoClip:
    """Six 112 x 168 frames sampled at 2 fps from a 3 s, 10 fps source: a square crossing."""
    frames = np.zeros((6, 112, 168, 3), np.uint8)
    for i in range(6):
        frames[i, :, :, 2] = 200 - 30 * i
        frames[i, 44:68, 20 * i : 20 * i + 24] = 255
    return VideoClip(frames, 10.0, (0, 5, 10, 15, 20, 25), 30, 3.0)


@pytest.fixture(scope="module")
def model_dir() -> Path:
    import hashlib
    import inspect

    key = hashlib.sha256(inspect.getsource(tiny_model).encode() + square_clip().frames.tobytes()).hexdigest()
    return cached_taught_model(CACHE / f"taught-gpu-video-{key[:16]}", [(square_clip(), PROMPT, TARGET)], 80)


@pytest.fixture(scope="module")
def llm(model_dir: Path) -> Iterator[object]:
    from vllm import LLM

    # Spawned, never forked: in a pytest process that has already used torch (the taught model is built
    # here), vLLM's forked engine core failed in session 7's lease ("Cannot re-initialize CUDA in
    # forked subprocess"). VllmEngine asks for spawn the same way.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
        engine = LLM(
            model=str(model_dir),
            limit_mm_per_prompt={"image": 1, "video": 1},
            max_model_len=4096,
            gpu_memory_utilization=0.3,
            seed=0,
        )
    yield engine
    del engine


def test_vllm_expands_the_video_as_transformers_does_and_answers(llm, model_dir: Path) -> None:  # type: ignore[no-untyped-def]
    from transformers import AutoProcessor
    from vllm import SamplingParams

    video = square_clip()
    processor = AutoProcessor.from_pretrained(model_dir, local_files_only=True)
    text = processor.apply_chat_template(
        build_messages(PROMPT, 0, video=True), add_generation_prompt=True, tokenize=False
    )
    sp = SamplingParams(max_tokens=96, temperature=0.0, skip_special_tokens=False)
    (out,) = llm.generate({"prompt": text, "multi_modal_data": {"video": vllm_video_input(video)}}, sp)
    # vLLM marks a video's frame tokens with <|video|> where transformers writes <|image|>.
    tok = processor.tokenizer
    image, vid = tok.convert_tokens_to_ids("<|image|>"), tok.convert_tokens_to_ids("<|video|>")
    reference = processor_inputs(processor, PROMPT, [], video=video)["input_ids"][0].tolist()
    assert list(out.prompt_token_ids) == [vid if t == image else t for t in reference]
    assert out.outputs[0].text.startswith(TARGET)
