"""Model inputs in GLM-4.1V's chat shape. The chat template itself comes with the model's processor."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PIL import Image


def build_messages(
    prompt: str, images: int | Sequence[Image.Image], video: bool = False
) -> list[dict[str, Any]]:
    """One user turn: the media first, then the text, the order GLM-4.1V's examples use.

    ``images`` is either the images themselves (the processor tokenizes them from the messages) or,
    for a text-only rendering of the prompt, how many image placeholders to write.
    """
    parts = [{"type": "image"} for _ in range(images)] if isinstance(images, int) else [
        {"type": "image", "image": img} for img in images
    ]  # fmt: skip
    if video:
        parts.append({"type": "video"})
    parts.append({"type": "text", "text": prompt})
    return [{"role": "user", "content": parts}]
