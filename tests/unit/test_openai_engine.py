"""The "openai" engine's pure parts: request bodies, reply shapes, server choice, retries (the HTTP
transport is httpx's in-memory MockTransport, a fake at the I/O seam). The real server process is in
tests/integration/test_openai_engine.py."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from pydantic import SecretStr

from jobs.config import S3Settings, Settings
from jobs.errors import EngineError, TransportError
from jobs.prompts.reasoning import split_output
from workers.inference.engine import GenerationRequest
from workers.inference.openai_engine import S3Publisher
from workers.inference.openai_http import Endpoints, RetryPolicy, endpoint_label, post_chat
from workers.inference.openai_wire import BadReply, chat_body, parse_reply, reply_text, user_turn
from workers.media.clip import VideoClip

TURN = [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]


def test_a_fresh_turn_asks_vllm_to_keep_special_tokens() -> None:
    body = chat_body("glm", TURN, "", 512, 0.0, "vllm")
    assert body["model"] == "glm" and body["max_tokens"] == 512 and body["skip_special_tokens"] is False
    assert body["messages"] == TURN and "continue_final_message" not in body


def test_a_continuation_appends_the_assistant_text_and_continues_it() -> None:
    body = chat_body("glm", TURN, "<think>a</think><answer>", 100, 0.6, "sglang", {"top_p": 0.9})
    assert body["messages"][-1] == {"role": "assistant", "content": "<think>a</think><answer>"}
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    assert body["top_p"] == 0.9 and body["temperature"] == 0.6
    assert len(TURN) == 1  # the turn shared by both passes is not changed


def test_a_generic_server_gets_plain_openai_fields() -> None:
    assert "skip_special_tokens" not in chat_body("gpt", TURN, "", 10, 0.0, "generic")


def test_pages_go_first_as_png_data_urls_then_the_text() -> None:
    req = GenerationRequest("r", "Describe.", [Image.new("RGB", (8, 6), "white")])
    (msg,) = user_turn(req)
    image, text = msg["content"]
    assert image["type"] == "image_url" and image["image_url"]["url"].startswith("data:image/png;base64,")
    assert text == {"type": "text", "text": "Describe."}


def test_a_presigned_page_is_what_the_publisher_returns() -> None:
    req = GenerationRequest("r", "Describe.", image_keys=["media/a/page-00001.png", "media/a/page-00002.png"])
    (msg,) = user_turn(req, lambda r: [f"https://s3/{k}" for k in r.image_keys])
    assert [p["image_url"]["url"] for p in msg["content"][:2]] == [
        "https://s3/media/a/page-00001.png", "https://s3/media/a/page-00002.png",
    ]  # fmt: skip


def publisher() -> S3Publisher:
    s3 = S3Settings(endpoint_url="http://s3.test:9000", access_key_id="k", secret_access_key=SecretStr("s"))
    return S3Publisher(Settings().model_copy(update={"s3": s3}))


def test_the_publisher_presigns_prep_s_stored_pages() -> None:
    key = "media/abc/1288px/page-00001.png"
    req = GenerationRequest("r", "Describe.", image_keys=[key])
    (url,) = publisher()(req)  # signing alone: no S3 request (s3.test does not resolve)
    assert url.startswith(f"http://s3.test:9000/vlmq/{key}?") and "Signature" in url


def test_pages_never_stored_go_as_data_urls_in_presigned_mode_too() -> None:
    req = GenerationRequest("r", "Describe.", [Image.new("RGB", (8, 6))])
    (url,) = publisher()(req)
    assert url.startswith("data:image/png;base64,")


def test_stored_pages_count_against_the_model_s_limits() -> None:
    with pytest.raises(ValueError, match="one key a page"):
        GenerationRequest("r", "p", [Image.new("RGB", (8, 6))], image_keys=["a.png", "b.png"])
    assert GenerationRequest("r", "p", image_keys=["a.png", "b.png"]).page_count == 2


def test_a_video_travels_as_jpeg_frames_in_one_data_url() -> None:
    clip = VideoClip(np.zeros((4, 8, 8, 3), np.uint8), 2.0, (0, 1, 2, 3), 4, 2.0)
    (msg,) = user_turn(GenerationRequest("r", "What happens?", video=clip))
    url = msg["content"][0]["video_url"]["url"]
    assert url.startswith("data:video/jpeg;base64,") and url.count(",") == 4


RAW = "<think>look at it</think><answer>A <|begin_of_box|>cat<|end_of_box|></answer>"


def _payload(message: dict[str, Any], finish: str = "stop") -> dict[str, Any]:
    return {"choices": [{"message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 5}}  # fmt: skip


def test_raw_and_split_replies_store_the_same_result() -> None:
    raw = parse_reply(_payload({"content": RAW}), continuation=False)
    split = parse_reply(
        _payload({"content": "<answer>A <|begin_of_box|>cat<|end_of_box|></answer>",
                  "reasoning_content": "look at it"}), continuation=False,
    )  # fmt: skip
    assert raw.text == split.text == RAW
    assert split_output(raw.text) == split_output(split.text)
    assert (raw.prompt_tokens, raw.completion_tokens, raw.finish_reason) == (7, 5, "stop")


def test_newer_vllm_names_the_field_reasoning() -> None:
    assert reply_text({"content": "<answer>x</answer>", "reasoning": "r"}, False, "stop") == (
        "<think>r</think><answer>x</answer>"
    )


def test_reasoning_cut_off_by_the_limit_stays_open_for_the_budget() -> None:
    assert reply_text({"content": None, "reasoning_content": "so far"}, False, "length") == "<think>so far"


def test_a_continuation_is_joined_without_think_tags() -> None:
    text = reply_text({"content": "cat</answer>", "reasoning_content": "A "}, True, "stop")
    assert text == "A cat</answer>"


def test_the_stop_token_is_cut_and_length_is_kept() -> None:
    reply = parse_reply(_payload({"content": "<think>t</think><answer>a</answer><|user|>"}, "length"), False)
    assert reply.text == "<think>t</think><answer>a</answer>" and reply.finish_reason == "length"


def test_a_body_that_is_no_completion_is_a_bad_reply() -> None:
    with pytest.raises(BadReply):
        parse_reply({"error": "x"}, False)


def test_the_least_busy_server_takes_the_next_request() -> None:
    eps = Endpoints(["http://a/v1", "http://b/v1/"])
    a, b = eps.all
    assert b.url == "http://b/v1"
    a.in_flight = 3
    assert eps.pick() is b
    b.in_flight = 5
    assert eps.pick() is a


def test_idle_servers_share_the_first_requests() -> None:
    eps = Endpoints(["http://a/v1", "http://b/v1"])
    assert {eps.pick().url for _ in range(2)} == {"http://a/v1", "http://b/v1"}


def test_a_resting_server_is_passed_over_unless_all_rest() -> None:
    now = [100.0]
    eps = Endpoints(["http://a/v1", "http://b/v1"], clock=lambda: now[0])
    a, b = eps.all
    policy = RetryPolicy(3, base_s=1, max_s=100)
    eps.failed(a, policy)
    eps.failed(a, policy)  # twice in a row: 4 s
    assert a.resting_until == 104 and all(eps.pick() is b for _ in range(3))
    eps.failed(b, policy, retry_after=1)
    assert eps.pick() is b  # back soonest
    eps.answered(b)
    assert b.failures == 0 and b.resting_until == 0
    now[0] = 105
    b.in_flight = 1
    assert eps.pick() is a


def test_no_base_url_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="BASE_URLS"):
        Endpoints([])


def test_backoff_is_jittered_and_capped() -> None:
    p = RetryPolicy(max_retries=3, base_s=1, max_s=5)
    assert all(0 <= p.delay(n) <= min(5, 2**n) for n in range(10) for _ in range(20))
    assert p.delay(0, retry_after=3) == 3 and p.delay(0, retry_after=60) == 5


def test_the_metrics_label_never_carries_credentials() -> None:
    assert endpoint_label("https://user:secret@api.example.com/v1?key=k") == "https://api.example.com"
    assert endpoint_label("http://10.0.0.5:8000/v1") == "http://10.0.0.5:8000"


def test_base_urls_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLMQ_MODEL__OPENAI__BASE_URLS", "http://a:8000/v1/, http://b:8000/v1")
    assert Settings().model.openai.base_urls == ["http://a:8000/v1", "http://b:8000/v1"]
    monkeypatch.setenv("VLMQ_MODEL__OPENAI__BASE_URLS", '["http://c/v1"]')
    assert Settings().model.openai.base_urls == ["http://c/v1"]


def _post(answers: list[int], policy: RetryPolicy) -> tuple[Any, list[float], list[int]]:
    """post_chat against a fake transport answering ``answers`` in turn (then 200)."""
    seen: list[int] = []
    waits: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(1)
        status = answers[len(seen) - 1] if len(seen) <= len(answers) else 200
        body = {"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}]}
        return httpx.Response(status, json=body if status == 200 else {"error": "no"})

    async def sleep(s: float) -> None:
        waits.append(s)

    async def go() -> Any:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            eps = Endpoints(["http://a/v1"])
            return await post_chat(client, eps, {"x": 1}, {}, policy, sleep)

    return asyncio.run(go()), waits, seen


def test_429_and_5xx_are_retried_with_backoff() -> None:
    reply, waits, seen = _post([429, 503], RetryPolicy(3, 0.01, 0.05))
    assert reply["choices"][0]["message"]["content"] == "ok"
    assert len(seen) == 3 and len(waits) == 2 and all(w <= 0.05 for w in waits)


def test_a_server_that_stays_down_gives_the_batch_back() -> None:
    with pytest.raises(TransportError, match="3 tries"):  # RetryableError: the units go back to wait
        _post([500] * 10, RetryPolicy(2, 0.01, 0.01))


def test_a_refused_request_is_not_retried() -> None:
    with pytest.raises(EngineError, match="400"):
        _post([400], RetryPolicy(3, 0.01, 0.01))


def test_the_metrics_count_each_endpoint() -> None:
    from prometheus_client import REGISTRY

    before = REGISTRY.get_sample_value(
        "vlmq_openai_errors_total", {"endpoint": "http://a", "kind": "http_429"}
    )
    _post([429], RetryPolicy(2, 0.01, 0.01))
    after = REGISTRY.get_sample_value(
        "vlmq_openai_errors_total", {"endpoint": "http://a", "kind": "http_429"}
    )
    assert (after or 0) - (before or 0) == 1
    assert (
        REGISTRY.get_sample_value("vlmq_openai_request_seconds_count", {"endpoint": "http://a"}) or 0
    ) >= 1
    assert REGISTRY.get_sample_value("vlmq_openai_in_flight", {"endpoint": "http://a"}) == 0


def test_json_settings_survive_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLMQ_MODEL__OPENAI__EXTRA_BODY", json.dumps({"top_k": 5}))
    monkeypatch.setenv("VLMQ_MODEL__OPENAI__API_KEY", "sk-test")
    o = Settings().model.openai
    assert o.extra_body == {"top_k": 5} and "sk-test" not in repr(o)
