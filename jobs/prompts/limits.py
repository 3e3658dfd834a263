"""GLM-4.1V's media limits per prompt: at most one video, and no images beside a video.

vlmq builds every prompt itself (one page image or one video, then the request's text), so the one
way a request could ask for more media in a prompt is to write the model's media placeholders into
its prompt text: the chat template passes them through, and the processor would expand each one
into another image or video slot. ``<|video|>`` in the prompt of a video item asks for a second
video; ``<|image|>`` there mixes an image into a video prompt; either would then fail in the engine
after taking a GPU slot. ``check_prompt_text`` refuses such prompts at submission (422,
``prompt_media_limit``), and ``check_media`` is the rule itself, which the engine seam applies too.
"""

from __future__ import annotations

from jobs.errors import PromptMediaLimit

MEDIA_TOKENS = (
    "<|begin_of_image|>",
    "<|image|>",
    "<|end_of_image|>",
    "<|begin_of_video|>",
    "<|video|>",
    "<|end_of_video|>",
)


def check_media(images: int, videos: int) -> None:
    if videos > 1:
        raise PromptMediaLimit(f"GLM-4.1V takes one video per prompt; this one would hold {videos}")
    if videos and images:
        raise PromptMediaLimit(f"GLM-4.1V takes no images beside a video; this prompt would hold {images}")


def check_prompt_text(text: str | None, where: str) -> None:
    """Refuse a prompt that writes media placeholders: they would add media to the item's own."""
    found = [tok for tok in MEDIA_TOKENS if text and tok in text]
    if found:
        raise PromptMediaLimit(
            f"{where}: the prompt contains {', '.join(found)}; media placeholders would add images or "
            "videos to the item's own, and GLM-4.1V takes one video per prompt and no images beside "
            "it. Each item is one file: submit other media as their own items."
        )
