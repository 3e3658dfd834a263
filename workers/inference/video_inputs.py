"""A clip as vLLM 0.26's GLM-4.1V model takes it in ``multi_modal_data["video"]``. Imports no vLLM.

vLLM's ``glm4_1v`` processor (``Glm4vMultiModalProcessor``) wants each video as a tuple
``(frames, metadata)``: frames a T x H x W x 3 uint8 array, metadata a dict of transformers'
``VideoMetadata`` fields plus ``do_sample_frames``. It builds ``VideoMetadata(**metadata)`` from every
key but ``do_sample_frames`` (so no other key may be there), hands the frames to the checkpoint's
video processor with ``do_sample_frames`` as given, and writes the prompt's per-frame timestamps
itself as ``int(frames_indices[i] / fps)`` for every other frame; it reads ``metadata["do_sample_frames"]``
with no default. With ``do_sample_frames=False`` it keeps the frames prep chose (GLM-4.1V's own
sampling, done once on the CPU) and ``frames_indices`` gives the timestamps, the same ones the
transformers engine's processor writes.

The lead's engine calls it as::

    prompt = processor.apply_chat_template(build_messages(req.prompt, 0, video=True), tokenize=False,
                                           add_generation_prompt=True)
    inputs = {"prompt": prompt, "multi_modal_data": {"video": vllm_video_input(req.video)}}

with ``limit_mm_per_prompt={"video": 1, ...}`` on the engine (one video per prompt, no images beside).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from workers.media.clip import VideoClip


def vllm_video_input(clip: VideoClip) -> tuple[np.ndarray, dict[str, Any]]:
    return clip.frames, {**clip.metadata(), "do_sample_frames": False}
