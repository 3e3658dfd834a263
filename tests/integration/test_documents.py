"""Documents through the real API, Postgres, S3 and the prep and inference code, with a FakeEngine
that records what the model would have been given: presets, grounding boxes in pixels (pages decoded,
or sent by key), document granularity, page ranges and passwords, text hints."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select

from jobs.config import Settings
from jobs.models import Item
from jobs.status import ItemStatus
from tests.fakes import FakeEngine
from tests.fixtures.make_fixtures import PASSWORD, encrypted_pdf, scanned_pdf, text_pdf
from workers import infer, prep
from workers.context import WorkerContext
from workers.media.images import encode_png

A = {"Authorization": "Bearer test-key"}
BOXED = "<think>Found it.</think><answer><|begin_of_box|>[[100,250,500,750]]<|end_of_box|></answer>"


def run_job(client: TestClient, ctx: WorkerContext, engine: FakeEngine, **post: Any) -> list[dict[str, Any]]:
    """Submit, prep every source, infer every ready unit, and return the results lines."""
    r = client.post("/v1/jobs", headers=A, **post)
    assert r.status_code == 202, r.text
    job_id = uuid.UUID(r.json()["id"])
    for source in _items(ctx, job_id, sources=True):
        prep.prepare(ctx, source.id)
    ready = [u.id for u in _items(ctx, job_id, sources=False) if u.status == ItemStatus.READY]
    infer.infer(ctx, engine, ready)
    assert client.get(f"/v1/jobs/{job_id}", headers=A).json()["status"] == "completed"
    return [json.loads(x) for x in client.get(f"/v1/jobs/{job_id}/results", headers=A).text.splitlines()]


def _items(ctx: WorkerContext, job_id: uuid.UUID, sources: bool) -> list[Item]:
    parent = Item.parent_id.is_(None) if sources else Item.parent_id.is_not(None)
    with ctx.service.sessions() as s:
        return list(s.scalars(select(Item).where(Item.job_id == job_id, parent).order_by(Item.page)))


class StoredPagesEngine(FakeEngine):
    """An engine that sends the stored pages by key (the openai engine's presigned mode): no pixels."""

    needs_pixels = False


@pytest.mark.parametrize("engine_kind", [FakeEngine, StoredPagesEngine])
def test_grounding_boxes_come_back_in_page_pixels(
    client: TestClient, ctx: WorkerContext, engine_kind: type[FakeEngine]
) -> None:
    screenshot = encode_png(Image.new("RGB", (800, 600), "white"))
    engine = engine_kind(lambda _: BOXED)
    options = json.dumps({"task": "grounding"})
    files = [("file", ("screen.png", screenshot, "image/png"))]
    (line,) = run_job(client, ctx, engine, files=files, data={"prompt": "the OK button", "options": options})
    (request,) = engine.requests
    assert "Find this in the image: the OK button" in request.prompt
    (key,) = request.image_keys  # prep's page, beside its pixels or in their place
    assert key.startswith("media/") and key.endswith(".png")
    pixels = engine_kind is FakeEngine
    assert [img.size for img in request.images] == ([(800, 600)] if pixels else [])
    assert line["prompt_version"] == "grounding-v1"
    assert line["boxes"] == ["[[100,250,500,750]]"]  # as before: the box text
    assert line["regions"] == [{"normalized": [100, 250, 500, 750], "box": [80, 150, 400, 450]}]


def test_document_granularity_sends_the_pages_in_one_prompt_with_their_text(
    client: TestClient, ctx: WorkerContext, settings: Settings
) -> None:
    pdf = text_pdf(4, "memo")
    engine = FakeEngine(lambda r: f"<think>{len(r.images)} pages.</think><answer>A memo.</answer>")
    body = {"granularity": "document", "text_hint": True, "pages": "2-4", "longest_side": 300}
    files = [("file", ("memo.pdf", pdf, "application/pdf"))]
    (line,) = run_job(client, ctx, engine, files=files, data={"options": json.dumps(body)})
    (request,) = engine.requests
    assert [img.size for img in request.images] == [(212, 300)] * 3
    assert "--- page 2 ---\nmemo page 2" in request.prompt and "memo page 4" in request.prompt
    assert "memo page 1" not in request.prompt
    assert (line["page"], line["pages"], line["answer"]) == (None, [2, 3, 4], "A memo.")
    assert line["prompt_version"] == "caption-v1+text-hint-v1"
    bucket, _, key = line["text_uri"].removeprefix("s3://").partition("/")
    assert bucket == settings.s3.bucket and b"memo page 3" in ctx.store.get(key)


@pytest.mark.parametrize("granularity", ["page", "document"])
def test_a_pdf_page_without_text_links_an_empty_text_layer(
    client: TestClient, ctx: WorkerContext, granularity: str
) -> None:
    """A scanned page has no text: its text layer is stored empty and linked all the same, so a reader
    tells "no text on the page" from an image, which has no text layer at all (null). Issue 22."""
    photo = encode_png(Image.new("RGB", (50, 50), "white"))
    files = [
        ("file", ("scan.pdf", scanned_pdf(), "application/pdf")),
        ("file", ("photo.png", photo, "image/png")),
    ]
    engine = FakeEngine(lambda _: "<think>t</think><answer>ok</answer>")
    options = json.dumps({"granularity": granularity, "text_hint": True})
    lines = {x["custom_id"]: x for x in run_job(client, ctx, engine, files=files, data={"options": options})}
    assert lines["scan.pdf"]["text_uri"], lines["scan.pdf"]
    bucket, _, key = lines["scan.pdf"]["text_uri"].removeprefix("s3://").partition("/")
    assert bucket == ctx.store.bucket and ctx.store.get(key) == b""
    assert lines["photo.png"]["text_uri"] is None
    # text_hint: the scan's (empty) layer goes into its prompt; the image has none to add.
    assert lines["scan.pdf"]["prompt_version"] == "caption-v1+text-hint-v1"
    assert lines["photo.png"]["prompt_version"] == "caption-v1"


def test_document_granularity_cuts_at_the_page_setting_and_says_so(
    client: TestClient, ctx: WorkerContext, settings: Settings
) -> None:
    ctx = WorkerContext(
        settings.model_copy(update={"media": settings.media.model_copy(update={"document_pages": 2})}),
        ctx.service,
        ctx.store,
    )
    engine = FakeEngine(lambda _: "<think>x</think><answer>y</answer>")
    files = [("file", ("long.pdf", text_pdf(5), "application/pdf"))]
    (line,) = run_job(client, ctx, engine, files=files, data={"options": '{"granularity": "document"}'})
    assert line["pages"] == [1, 2] and "document_pages_cut" in line["flags"]
    assert len(engine.requests[0].images) == 2


def test_item_options_pick_pages_and_unlock_pdfs(client: TestClient, ctx: WorkerContext) -> None:
    bucket = ctx.store.bucket
    ctx.store.put("in/report.pdf", text_pdf(5, "report"))
    ctx.store.put("in/locked.pdf", encrypted_pdf(PASSWORD))
    items = [
        {"custom_id": "report", "uri": f"s3://{bucket}/in/report.pdf", "options": {"pages": "2,4-"}},
        {"custom_id": "locked", "uri": f"s3://{bucket}/in/locked.pdf", "options": {"password": PASSWORD}},
        {"custom_id": "locked-no-pw", "uri": f"s3://{bucket}/in/locked.pdf"},
        {"custom_id": "short", "uri": f"s3://{bucket}/in/report.pdf", "options": {"pages": "6"}},
    ]
    engine = FakeEngine(lambda r: "<think>t</think><answer>ok</answer>")
    lines = run_job(client, ctx, engine, json={"items": items, "options": {"task": "ocr"}})
    by_id: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        by_id.setdefault(line["custom_id"], []).append(line)
    assert [x["page"] for x in by_id["report"]] == [2, 4, 5]
    assert all(x["text_uri"] and x["prompt_version"] == "ocr-v1" for x in by_id["report"])
    assert [(x["page"], x["status"]) for x in by_id["locked"]] == [(1, "succeeded")]
    assert by_id["locked-no-pw"][0]["error"]["code"] == "encrypted_document"
    assert by_id["short"][0]["error"]["code"] == "pages_out_of_range"
    assert all("Transcribe all the text" in r.prompt for r in engine.requests)


def test_qa_puts_each_items_question_into_the_template(client: TestClient, ctx: WorkerContext) -> None:
    bucket = ctx.store.bucket
    ctx.store.put("in/q.png", encode_png(Image.new("RGB", (50, 50), "white")))
    items = [
        {"custom_id": f"q{i}", "uri": f"s3://{bucket}/in/q.png", "prompt": question}
        for i, question in enumerate(["What colour is it?", "Is it empty?"])
    ]
    engine = FakeEngine(lambda r: "<think>t</think><answer>white</answer>")
    lines = run_job(client, ctx, engine, json={"items": items, "options": {"task": "qa"}})
    assert {x["prompt_version"] for x in lines} == {"qa-v1"}
    prompts = sorted(r.prompt for r in engine.requests)
    assert prompts[0].endswith("Question: Is it empty?") and prompts[1].endswith(
        "Question: What colour is it?"
    )
    no_question = [{"custom_id": "q", "uri": f"s3://{bucket}/in/q.png"}]
    r = client.post("/v1/jobs", headers=A, json={"items": no_question, "options": {"task": "qa"}})
    assert r.status_code == 422 and "needs a prompt" in r.text
