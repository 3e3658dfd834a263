"""Model inputs in GLM-4.1V's chat shape. The chat template itself comes with the model's processor."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PIL import Image

from jobs.prompts.presets import DEFAULT

# The preset text and its version live in jobs.prompts.presets (the API stores the version on every job and
# result); named here too for the engines' callers, never redefined.
DEFAULT_PROMPT = DEFAULT.prompt
PROMPT_VERSION = DEFAULT.version


def _image_part(image: Image.Image | None) -> dict[str, Any]:
    return {"type": "image"} if image is None else {"type": "image", "image": image}


def build_messages(
    prompt: str, images: int | Sequence[Image.Image], video: bool = False
) -> list[dict[str, Any]]:
    """One user turn: the media first, then the text, the order GLM-4.1V's examples use.

    ``images`` is either how many image placeholders to write (vLLM takes the pixels separately) or
    the images themselves (transformers' processor reads them from the message parts). ``video``
    adds the one video part, which the chat template writes as
    ``<|begin_of_video|><|video|><|end_of_video|>``; both engines pass the frames and their metadata
    to the processor beside the text, which expands it into frames and timestamps. GLM-4.1V takes
    one video per prompt and no images beside it (jobs.prompts.limits).
    """
    slots: Sequence[Image.Image | None] = [None] * images if isinstance(images, int) else images
    parts = [_image_part(img) for img in slots]
    if video:
        parts.append({"type": "video"})
    parts.append({"type": "text", "text": prompt})
    return [{"role": "user", "content": parts}]
