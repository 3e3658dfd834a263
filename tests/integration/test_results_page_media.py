"""The results page's media route (GET /ui/jobs/{id}/pages/{unit}.png) over the real API, Postgres and
S3, after the real prep: a video's unit stores a clip (a zip of frames) that no browser can show, so the
route draws a contact sheet of its frames; another tenant still gets a 404. Issue 22, defect 3."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select

from jobs.models import Item
from tests.fixtures.videos import GOOD
from workers import prep
from workers.context import WorkerContext
from workers.media import clip, sheet

A = {"Authorization": "Bearer test-key"}
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def prepared_video(client: TestClient, ctx: WorkerContext) -> tuple[str, str]:
    """Submit the 3 s clip and prep it: (the path of its unit's image on the results page, its clip key)."""
    files = [("file", (GOOD, (FIXTURES / GOOD).read_bytes(), "video/mp4"))]
    r = client.post("/v1/jobs", headers=A, files=files, data={"prompt": "What happens?"})
    assert r.status_code == 202, r.text
    job_id = uuid.UUID(r.json()["id"])
    with ctx.service.sessions() as s:
        (source,) = s.scalars(select(Item).where(Item.job_id == job_id, Item.parent_id.is_(None)))
    prep.prepare(ctx, source.id)
    with ctx.service.sessions() as s:
        (unit,) = s.scalars(select(Item).where(Item.job_id == job_id, Item.parent_id.is_not(None)))
    assert unit.media_key and unit.media_key.endswith("/clip.zip")
    return f"/ui/jobs/{job_id}/pages/{unit.id}.png", unit.media_key


def test_a_video_shows_as_a_png_contact_sheet_of_its_frames(client: TestClient, ctx: WorkerContext) -> None:
    path, key = prepared_video(client, ctx)
    assert client.get(path).status_code == 401  # no cookie

    client.cookies.set("vlmq_key", "test-key")
    r = client.get(path)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    png = Image.open(io.BytesIO(r.content))
    png.load()  # the bytes really decode as an image, not only claim to be one
    assert png.format == "PNG"
    # 3 s at 2 frames a second: 6 frames, in 2 rows of 4 at most, each with a strip for its time.
    frames = clip.unpack(ctx.store.get(key)).frames
    (count, h, w, _) = frames.shape
    assert count == 6 and max(w, h) <= sheet.TILE
    assert png.size == (4 * (w + sheet.GAP) - sheet.GAP, 2 * (h + sheet.LABEL + sheet.GAP) - sheet.GAP)

    client.cookies.set("vlmq_key", "other-key")
    assert client.get(path).status_code == 404  # another tenant's video, as before
