"""Videos through GLM-4.1V's real processor and the CPU engine (tiny model): the sampling and the frame
sizes are the model's own, the prompt holds the video tokens and timestamps, and the vLLM input agrees."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from transformers import Glm4vVideoProcessor
from transformers.models.glm4v.video_processing_glm4v import smart_resize
from transformers.video_utils import VideoMetadata

from tests.fixtures.video_model import VIDEO_PROMPT, VIDEO_TARGET, taught_clip, taught_video_model
from workers.inference.engine import GenerationRequest
from workers.inference.prompts import build_messages
from workers.inference.transformers_engine import TransformersEngine, processor_inputs
from workers.inference.video_inputs import vllm_video_input
from workers.media.video import frame_size, sample_indices

pytestmark = pytest.mark.slow

PAIR = r"<\|begin_of_image\|>((?:<\|image\|>)+)<\|end_of_image\|>(\d+)"


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> TransformersEngine:
    return TransformersEngine(str(tiny_model_dir), "tiny")


@pytest.mark.parametrize(
    ("total", "fps"),
    [(1, 30.0), (7, 10.0), (30, 10.0), (90, 29.97), (1799, 24.0), (9000, 30.0), (9001, 30.0), (54000, 25.0)],
)
def test_sampling_is_the_models_own(total: int, fps: float) -> None:
    meta = VideoMetadata(total_num_frames=total, fps=fps, duration=total / fps)
    reference = [int(i) for i in Glm4vVideoProcessor().sample_frames(meta)]  # its defaults: 2 fps, 300 s
    assert sample_indices(total, fps, target_fps=2, sample_seconds=300, max_frames=600) == reference


@pytest.mark.parametrize(
    ("h", "w", "t"), [(720, 1280, 600), (1080, 1920, 20), (120, 160, 6), (2160, 3840, 2)]
)
def test_the_processor_keeps_stored_frame_sizes(h: int, w: int, t: int) -> None:
    fh, fw = frame_size(h, w, t, max_tokens=6144, longest_side=1288)
    assert smart_resize(t, fh, fw, temporal_factor=2, factor=28, max_pixels=28 * 28 * 2 * 30000) == (fh, fw)


def test_chat_template_writes_the_video_placeholder(engine: TransformersEngine) -> None:
    text = engine.processor.apply_chat_template(
        build_messages("What happens?", 0, video=True), add_generation_prompt=True, tokenize=False
    )
    assert text == (
        "[gMASK]<sop><|user|>\n<|begin_of_video|><|video|><|end_of_video|>What happens?<|assistant|>\n"
    )


def test_prompt_holds_the_video_tokens_and_timestamps(engine: TransformersEngine) -> None:
    video = taught_clip()  # 6 frames of 112 x 168, from 0, 0.5, ... 2.5 s
    inputs = processor_inputs(engine.processor, "What happens?", [], video=video)
    assert inputs["video_grid_thw"].tolist() == [[3, 8, 12]]  # pairs of frames, 14 px patches: unresized
    text = engine.processor.tokenizer.decode(inputs["input_ids"][0])
    assert text.startswith("[gMASK]<sop><|user|>\n<|begin_of_video|><|begin_of_image|>")
    assert text.endswith("<|end_of_image|>2<|end_of_video|>What happens?<|assistant|>\n")
    pairs = re.findall(PAIR, text)
    assert [int(ts) for _, ts in pairs] == [0, 1, 2]  # one whole-second timestamp per pair of frames
    assert all(len(tokens) == len("<|image|>") * 4 * 6 for tokens, _ in pairs)  # (8 / 2) x (12 / 2)
    # vLLM writes its own timestamps from the metadata we give it: int(index / fps) for every other frame.
    frames, meta = vllm_video_input(video)
    assert frames is video.frames and meta.pop("do_sample_frames") is False
    assert [int(i / meta["fps"]) for i in meta["frames_indices"]][::2] == [int(ts) for _, ts in pairs]
    assert VideoMetadata(**meta).timestamps == video.timestamps  # no key vLLM's VideoMetadata(**) refuses


def test_engine_generates_for_a_video(engine: TransformersEngine) -> None:
    video = taught_clip()
    (out,) = engine.generate([GenerationRequest("v", "What happens?", (), max_new_tokens=8, video=video)])
    text = engine.processor.apply_chat_template(
        build_messages("What happens?", 0, video=True), add_generation_prompt=True, tokenize=False
    )
    n_text = len(engine.processor.tokenizer(text).input_ids) - 1  # all but the <|video|> placeholder
    # 3 pairs, each <|begin_of_image|> + 24 <|image|> + <|end_of_image|> + a one-digit timestamp.
    assert out.prompt_tokens == n_text + 3 * (1 + 24 + 1 + 1)
    assert 0 < out.completion_tokens <= 8


def test_a_prompt_takes_no_images_beside_a_video() -> None:
    from PIL import Image

    from jobs.errors import PromptMediaLimit

    with pytest.raises(PromptMediaLimit, match="no images beside a video"):
        GenerationRequest("x", "Hi", [Image.new("RGB", (28, 28))], video=taught_clip())


def test_taught_model_answers_its_video_exactly() -> None:
    engine = TransformersEngine(str(taught_video_model()), "taught-video")
    (out,) = engine.generate(
        [GenerationRequest("a", VIDEO_PROMPT, (), max_new_tokens=96, video=taught_clip())]
    )
    assert (out.text, out.finish_reason) == (VIDEO_TARGET, "stop")
