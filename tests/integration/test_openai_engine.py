"""The "openai" engine against real HTTP server processes (tests/fixtures/openai_server.py) speaking the
chat completions API: reasoning in both shapes, the thinking budget's continuation, retries of 429s,
500s, timeouts and dropped connections, a server that stays down, balancing over two servers, abort,
presigned pages (prep's own objects, through S3: moto), video frames, and the per-endpoint metrics."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.cli.servers import free_port
from jobs.adapters.storage import BlobStore
from jobs.config import OpenAISettings, Settings
from jobs.errors import EngineError, TransportError
from jobs.prompts.reasoning import split_output
from tests.fixtures import openai_server
from tests.fixtures.make_fixtures import text_pdf
from tests.integration import with_section
from tests.integration.test_documents import A as API_KEY
from tests.integration.test_documents import _items
from workers import infer, prep
from workers.context import WorkerContext
from workers.inference.budget import BUDGET_FLAG
from workers.inference.engine import GenerationRequest
from workers.inference.openai_engine import OpenAIEngine
from workers.media import manifest
from workers.media.clip import VideoClip

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """Two server processes; their base URLs."""
    logs = tmp_path_factory.mktemp("openai-server")
    procs, urls = [], []
    try:
        for i in range(2):
            port = free_port()
            procs.append(openai_server.start(port, logs / f"server-{i}.log"))
            urls.append(f"http://127.0.0.1:{port}/v1")
        yield urls
    finally:
        for p in procs:
            p.stop()


def control(url: str, mode: str, **kw: Any) -> None:
    httpx.post(url.removesuffix("/v1") + "/control", json={"mode": mode, **kw}, timeout=5).raise_for_status()


def log(url: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(url.removesuffix("/v1") + "/log", timeout=5).json()
    return body


def make_settings(urls: list[str], **openai: Any) -> Settings:
    values: dict[str, Any] = {
        "base_urls": urls, "api_key": "sk-test", "served_model": openai_server.MODEL,
        "backoff_base_s": 0.01, "backoff_max_s": 0.05, "max_retries": 3, **openai,
    }  # fmt: skip
    model = Settings().model.model_copy(update={"engine": "openai", "thinking_budget": None})
    settings = Settings().model_copy(update={"model": model})
    return with_section(settings, "model", openai=OpenAISettings(**values))  # validated


@pytest.fixture
def engine_for(servers: list[str]) -> Iterator[Any]:
    made: list[OpenAIEngine] = []

    def make(urls: list[str] | None = None, budget: int | None = None, **openai: Any) -> OpenAIEngine:
        s = make_settings(urls or servers[:1], **openai)
        s = with_section(s, "model", thinking_budget=budget)
        made.append(OpenAIEngine(s))
        return made[-1]

    yield make
    for e in made:
        e.shutdown()


def page(rid: str, max_new_tokens: int = 200) -> GenerationRequest:
    return GenerationRequest(
        rid, "Describe this page.", [Image.new("RGB", (64, 48), "white")], max_new_tokens
    )


def test_raw_output_comes_back_as_the_model_wrote_it(servers: list[str], engine_for: Any) -> None:
    control(servers[0], "raw")
    (out,) = engine_for().generate([page("raw-1")])
    parsed = split_output(out.text)
    assert parsed.answer == "images=1 sizes=64x48 video_frames=0" and not parsed.flags
    assert parsed.boxes == ["images=1 sizes=64x48 video_frames=0"]
    assert (out.prompt_tokens, out.finish_reason) == (100, "stop") and out.completion_tokens > 40
    (req,) = log(servers[0])["requests"]
    assert req["authorization"] == "Bearer sk-test" and req["body"]["skip_special_tokens"] is False
    assert req["body"]["model"] == openai_server.MODEL
    assert req["body"]["messages"][0]["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")


def test_a_reasoning_parser_split_stores_the_same_result(servers: list[str], engine_for: Any) -> None:
    engine = engine_for()
    control(servers[0], "raw")
    (raw,) = engine.generate([page("shape-1")])
    control(servers[0], "split")
    (split,) = engine.generate([page("shape-1")])
    assert split.text == raw.text and split_output(split.text) == split_output(raw.text)


@pytest.mark.parametrize("mode", ["budget", "budget_split"])
def test_the_thinking_budget_continues_the_assistant_message(
    servers: list[str], engine_for: Any, mode: str
) -> None:
    control(servers[0], mode)
    (out,) = engine_for(budget=10).generate([page("budget-1", max_new_tokens=100)])
    assert out.flags == (BUDGET_FLAG,) and out.finish_reason == "stop"
    parsed = split_output(out.text)
    assert parsed.answer == "images=1 sizes=64x48 video_frames=0" and not parsed.flags
    assert parsed.reasoning.split() == [f"step{i}" for i in range(10)]
    first, second = (r["body"] for r in log(servers[0])["requests"])
    assert first["max_tokens"] == 10 and "continue_final_message" not in first
    assert second["continue_final_message"] is True and second["add_generation_prompt"] is False
    assert second["messages"][-1]["role"] == "assistant"
    assert second["messages"][-1]["content"].endswith("</think><answer>")
    assert second["max_tokens"] == 90


def test_a_generic_server_gets_no_budget(servers: list[str], engine_for: Any) -> None:
    control(servers[0], "no_continue")
    (out,) = engine_for(budget=10, server="generic").generate([page("generic-1", max_new_tokens=100)])
    assert out.flags == () and split_output(out.text).answer
    (req,) = log(servers[0])["requests"]
    assert req["body"]["max_tokens"] == 100 and "skip_special_tokens" not in req["body"]


def test_a_server_refusing_the_continuation_fails_the_batch_as_an_engine_error(
    servers: list[str], engine_for: Any
) -> None:
    control(servers[0], "no_continue")
    with pytest.raises(EngineError, match="400"):
        engine_for(budget=10).generate([page("refused-1", max_new_tokens=100)])


@pytest.mark.parametrize("mode", ["429", "500", "drop", "slow"])
def test_a_transient_failure_is_retried(servers: list[str], engine_for: Any, mode: str) -> None:
    control(servers[0], mode, fail_times=1, delay=2)
    outs = engine_for(read_timeout_s=0.5).generate([page(f"{mode}-1"), page(f"{mode}-2")])
    assert all(split_output(o.text).answer for o in outs)
    assert log(servers[0])["attempts"] == {f"{mode}-1": 2, f"{mode}-2": 2}


@pytest.mark.parametrize("mode", ["500", "slow"])
def test_a_server_that_stays_down_gives_the_batch_back(
    servers: list[str], engine_for: Any, mode: str
) -> None:
    control(servers[0], mode, fail_times=-1, delay=2)
    with pytest.raises(TransportError, match="4 tries"):
        engine_for(read_timeout_s=0.3).generate([page(f"down-{mode}")])


def test_a_closed_port_is_retried_on_the_other_server(servers: list[str], engine_for: Any) -> None:
    control(servers[0], "raw")
    dead = f"http://127.0.0.1:{free_port()}/v1"
    outs = engine_for(urls=[dead, servers[0]]).generate([page(f"failover-{i}") for i in range(4)])
    assert all(split_output(o.text).answer for o in outs)


def test_requests_are_spread_over_the_servers(servers: list[str], engine_for: Any) -> None:
    for url in servers:
        control(url, "slow", fail_times=-1, delay=0.3)  # all in flight at once
    engine_for(urls=servers).generate([page(f"spread-{i}") for i in range(8)])
    assert [len(log(u)["requests"]) for u in servers] == [4, 4]


def test_abort_cancels_the_requests_in_flight(servers: list[str], engine_for: Any) -> None:
    control(servers[0], "slow", fail_times=-1, delay=10)
    engine = engine_for()
    outs: list[Any] = []
    t = threading.Thread(target=lambda: outs.extend(engine.generate([page("abort-1"), page("abort-2")])))
    t0 = time.monotonic()
    t.start()
    time.sleep(0.5)
    engine.abort(["abort-1", "abort-2"])
    t.join(5)
    assert not t.is_alive() and time.monotonic() - t0 < 3
    assert [(o.text, o.completion_tokens) for o in outs] == [("", 0), ("", 0)]


class ReadsRecorded:
    """The worker's store, recording the objects read whole and those of which only the start was read."""

    def __init__(self, store: BlobStore) -> None:
        self._store = store
        self.whole: list[str] = []
        self.starts: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def get(self, key: str) -> bytes:
        self.whole.append(key)
        return self._store.get(key)

    def get_start(self, key: str, n: int) -> bytes:
        self.starts.append(key)
        return self._store.get_start(key, n)


def run_pdf_job(
    client: TestClient, ctx: WorkerContext, url: str, media: str, granularity: str
) -> tuple[list[str], list[str], ReadsRecorded]:
    """A 3-page PDF job through the API, prep and inference on the openai engine (``media``): its answers,
    the keys of prep's page images, and what the inference worker read of the store."""
    reads = ReadsRecorded(ctx.store)
    worker = WorkerContext(ctx.settings, ctx.service, reads)  # type: ignore[arg-type]
    engine = OpenAIEngine(make_settings([url], media=media).model_copy(update={"s3": ctx.settings.s3}))
    files = [("file", ("memo.pdf", text_pdf(3, "memo"), "application/pdf"))]
    options = {"options": json.dumps({"granularity": granularity})}
    job_id = uuid.UUID(client.post("/v1/jobs", headers=API_KEY, files=files, data=options).json()["id"])
    try:
        prep.prepare(ctx, _items(ctx, job_id, sources=True)[0].id)
        units = _items(ctx, job_id, sources=False)
        infer.infer(worker, engine, [u.id for u in units])
    finally:
        engine.shutdown()
    lines = client.get(f"/v1/jobs/{job_id}/results", headers=API_KEY).text.splitlines()
    keys = [k for u in units for k in manifest.image_keys(ctx.store, u.media_key or "")]
    return [json.loads(x)["answer"] for x in lines], keys, reads


def pixels_seen(requests: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(size, pixel digest) of every image the server got, in an order that ignores the requests'."""
    return sorted((i["size"], i["pixels"]) for q in requests for i in q["images"])


@pytest.mark.parametrize("granularity", ["page", "document"])
def test_presigned_pages_are_prep_s_own_objects(
    servers: list[str], client: TestClient, ctx: WorkerContext, granularity: str
) -> None:
    control(servers[0], "raw")
    answers, keys, reads = run_pdf_job(client, ctx, servers[0], "presigned", granularity)
    presigned = log(servers[0])["requests"]
    bucket = ctx.settings.s3.bucket
    fetched = [i["source"] for q in presigned for i in q["images"]]
    assert sorted(fetched) == sorted(f"{ctx.settings.s3.endpoint_url}/{bucket}/{k}" for k in keys)
    assert len(keys) == 3 and not set(keys) & set(reads.whole)  # the worker read no page...
    assert sorted(reads.starts) == sorted(keys)  # ... but its header (the size, for boxes in pixels)
    listed = ctx.store.client.list_objects_v2(Bucket=bucket, Prefix="openai-media/")  # type: ignore[attr-defined]
    assert listed["KeyCount"] == 0  # nothing uploaded again
    # The server got the same pixels as data URLs of the pages the worker decoded (the mode before).
    control(servers[0], "raw")
    data_answers, _, data_reads = run_pdf_job(client, ctx, servers[0], "data_url", granularity)
    assert pixels_seen(presigned) == pixels_seen(log(servers[0])["requests"])
    assert answers == data_answers and set(keys) <= set(data_reads.whole)


def test_a_video_clip_travels_as_its_frames(servers: list[str], engine_for: Any) -> None:
    control(servers[0], "raw")
    clip = VideoClip(np.zeros((6, 32, 32, 3), np.uint8), 2.0, (0, 1, 2, 3, 4, 5), 6, 3.0)
    (out,) = engine_for().generate([GenerationRequest("video-1", "What happens?", video=clip)])
    assert split_output(out.text).answer == "images=0 sizes= video_frames=6"


def test_metrics_are_kept_per_endpoint(servers: list[str], engine_for: Any, tmp_path: Path) -> None:
    from prometheus_client import REGISTRY

    label = {"endpoint": servers[0].removesuffix("/v1")}
    before = REGISTRY.get_sample_value("vlmq_openai_request_seconds_count", label) or 0
    control(servers[0], "429", fail_times=1)
    engine_for().generate([page("metrics-1")])
    assert (
        REGISTRY.get_sample_value("vlmq_openai_request_seconds_count", label) or 0
    ) == before + 2  # the 429 and the answer
    assert (REGISTRY.get_sample_value("vlmq_openai_errors_total", {**label, "kind": "http_429"}) or 0) >= 1
    assert REGISTRY.get_sample_value("vlmq_openai_in_flight", label) == 0
