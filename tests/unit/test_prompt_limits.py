"""GLM-4.1V's per-prompt media rule, and the vLLM video input built from a clip (no vLLM imported)."""

from __future__ import annotations

import numpy as np
import pytest

from jobs.errors import InvalidInput, PromptMediaLimit
from jobs.prompts.limits import MEDIA_TOKENS, check_media, check_prompt_text
from workers.inference.engine import GenerationRequest
from workers.inference.video_inputs import vllm_video_input
from workers.media.clip import VideoClip

CLIP = VideoClip(np.zeros((4, 28, 56, 3), np.uint8), 25.0, (0, 13, 25, 25), 26, 1.04)


@pytest.mark.parametrize(("images", "videos"), [(0, 0), (5, 0), (0, 1)])
def test_allowed_media(images: int, videos: int) -> None:
    check_media(images, videos)


@pytest.mark.parametrize(("images", "videos", "needle"), [(0, 2, "one video"), (1, 1, "no images beside")])
def test_refused_media(images: int, videos: int, needle: str) -> None:
    with pytest.raises(PromptMediaLimit, match=needle) as err:
        check_media(images, videos)
    assert isinstance(err.value, InvalidInput) and err.value.code == "prompt_media_limit"


@pytest.mark.parametrize("token", MEDIA_TOKENS)
def test_prompt_text_with_a_media_placeholder_is_refused(token: str) -> None:
    with pytest.raises(PromptMediaLimit, match="item a: the prompt contains"):
        check_prompt_text(f"look {token} here", "item a")


def test_ordinary_prompts_pass() -> None:
    for text in (None, "", "Describe the video.", "Use <answer> and <|begin_of_box|> tags."):
        check_prompt_text(text, "job prompt")


def test_engine_seam_applies_the_rule() -> None:
    from PIL import Image

    assert GenerationRequest("v", "What happens?", video=CLIP).video is CLIP
    with pytest.raises(PromptMediaLimit):
        GenerationRequest("v", "What happens?", [Image.new("RGB", (28, 28))], video=CLIP)


def test_vllm_video_input_is_frames_and_metadata_without_resampling() -> None:
    frames, meta = vllm_video_input(CLIP)
    assert frames is CLIP.frames and frames.dtype == np.uint8 and frames.shape == (4, 28, 56, 3)
    assert meta == {
        "total_num_frames": 26, "fps": 25.0, "width": 56, "height": 28, "duration": 1.04,
        "video_backend": "decord", "frames_indices": [0, 13, 25, 25], "do_sample_frames": False,
    }  # fmt: skip
    # vLLM's GLM-4.1V prompt timestamps: int(index / fps) for every other frame.
    assert [int(i / meta["fps"]) for i in meta["frames_indices"]][::2] == [0, 1]
