"""Chat messages in GLM-4.1V's shape, and the default prompt's identity."""

from __future__ import annotations

from PIL import Image

from jobs.prompts.presets import DEFAULT, prompt_version
from workers.inference.prompts import DEFAULT_PROMPT, PROMPT_VERSION, build_messages


def test_placeholders_come_before_the_text() -> None:
    assert build_messages("Describe.", 2) == [
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Describe."}],
        }
    ]


def test_text_only_prompt_has_just_the_text() -> None:
    assert build_messages("Hi", 0) == [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]


def test_images_ride_in_their_parts_in_order() -> None:
    a, b = Image.new("RGB", (8, 8)), Image.new("RGB", (8, 8), "white")
    (msg,) = build_messages("Compare.", [a, b])
    assert [p["type"] for p in msg["content"]] == ["image", "image", "text"]
    assert msg["content"][0]["image"] is a and msg["content"][1]["image"] is b


def test_video_part_sits_between_images_and_text() -> None:
    (msg,) = build_messages("What happens?", 0, video=True)
    assert msg["content"] == [{"type": "video"}, {"type": "text", "text": "What happens?"}]


def test_default_prompt_is_the_presets_own() -> None:
    assert DEFAULT.prompt == DEFAULT_PROMPT
    assert PROMPT_VERSION == prompt_version(None) == "caption-v1"
    assert "page" in DEFAULT_PROMPT.lower()
