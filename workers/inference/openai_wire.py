"""The "openai" engine's wire format, pure: a GenerationRequest as a chat completions body, and a reply
as the raw ``<think>…</think><answer>…</answer>`` text every engine returns (workers.inference.engine).

Messages are GLM-4.1V's one user turn (workers.inference.prompts.build_messages' order: media first,
then the text); the server applies the model's chat template, as the in-process engines do.

The thinking budget (workers.inference.budget) runs unchanged over the API: its "prompt" here is the
assistant text so far. An empty one is a fresh turn; a non-empty one is sent as an assistant message that
the server continues (``continue_final_message``, ``add_generation_prompt: false``: vLLM's and SGLang's
extra fields), so ``</think><answer>`` appended by the budget is what the model goes on from.

Reasoning comes back in one of two shapes, and both give the same text: raw (``content`` holds
``<think>…</think><answer>…</answer>``), or split by the server's reasoning parser (vLLM
``--reasoning-parser glm45``: ``reasoning_content``, ``reasoning`` in newer vLLM, beside ``content``).
A split first turn is put back together with its think tags; a continuation generates no think tags,
so its two parts are simply joined.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from PIL import Image

from workers.inference.engine import FinishReason, GenerationRequest, strip_stop
from workers.media.clip import VideoClip
from workers.media.images import encode_png

Server = Literal["vllm", "sglang", "generic"]
# A request's pages as the server is to see them, in prompt order: "data:" URLs, or https URLs it
# fetches (presigned S3 GETs of prep's stored pages: workers.inference.openai_engine.S3Publisher).
Publish = Callable[[GenerationRequest], list[str]]
REASONING_FIELDS = ("reasoning_content", "reasoning")  # vLLM before 0.11 / after


def data_url(data: bytes, media_type: str) -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"


def png_data_url(png: bytes) -> str:
    return data_url(png, "image/png")


def data_urls(req: GenerationRequest) -> list[str]:
    """Each page's pixels as a PNG data URL (``model.openai.media = "data_url"``)."""
    return [png_data_url(encode_png(img)) for img in req.images]


def video_url(clip: VideoClip, quality: int = 90) -> str:
    """Prep's sampled frames as vLLM's ``video/jpeg`` data URL: base64 JPEG frames joined by commas.
    Presigned mode too: prep stores a clip as one zip (workers.media.clip), no frame a server could fetch."""
    frames = []
    for frame in clip.frames:
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
        frames.append(base64.b64encode(buf.getvalue()).decode("ascii"))
    return "data:video/jpeg;base64," + ",".join(frames)


def user_turn(req: GenerationRequest, publish: Publish = data_urls) -> list[dict[str, Any]]:
    """The request's one user message: image parts (``publish`` gives the pages' URLs), or the video
    part, then the text."""
    parts: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": u}} for u in publish(req)]
    if req.video is not None:
        parts.append({"type": "video_url", "video_url": {"url": video_url(req.video)}})
    parts.append({"type": "text", "text": req.prompt})
    return [{"role": "user", "content": parts}]


def continues(server: Server) -> bool:
    """Whether the server continues a final assistant message: what the thinking budget needs."""
    return server != "generic"


def chat_body(
    model: str, messages: Sequence[Mapping[str, Any]], prefix: str, max_tokens: int, temperature: float,
    server: Server, extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """One chat completions request. ``prefix``: the assistant text so far (budget pass 2), or ""."""
    body: dict[str, Any] = {
        "model": model, "messages": list(messages), "max_tokens": max_tokens,
        "temperature": temperature, "stream": False,
    }  # fmt: skip
    if server != "generic":
        # Decoded as the in-process engines decode: special tokens kept (the box markers), stop token cut.
        body["skip_special_tokens"] = False
    if prefix:
        body["messages"].append({"role": "assistant", "content": prefix})
        body["continue_final_message"] = True
        body["add_generation_prompt"] = False
    body.update(extra or {})
    return body


@dataclass(frozen=True)
class Reply:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason


class BadReply(ValueError):
    """A 200 whose body is not a chat completion."""


def parse_reply(payload: Any, continuation: bool) -> Reply:
    try:
        choice = payload["choices"][0]
        message = choice["message"]
        usage = payload.get("usage") or {}
    except (KeyError, IndexError, TypeError) as e:
        raise BadReply(f"not a chat completion: {str(payload)[:300]}") from e
    finish: FinishReason = "length" if choice.get("finish_reason") == "length" else "stop"
    text = strip_stop(reply_text(message, continuation, finish))
    return Reply(text, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0), finish)


def reply_text(message: Mapping[str, Any], continuation: bool, finish: FinishReason) -> str:
    """The raw text of a reply, whichever shape it came in (see the module's note)."""
    content = message.get("content") or ""
    reasoning = next((message[f] for f in REASONING_FIELDS if message.get(f)), "")
    if not reasoning:
        return str(content)
    if continuation:
        return f"{reasoning}{content}"
    # Closed when the server found </think> (an answer follows) or the model stopped; cut off by the
    # token limit with no answer yet, it stays open so the budget forces the close.
    closed = bool(content) or finish == "stop"
    return f"<think>{reasoning}{'</think>' if closed else ''}{content}"
