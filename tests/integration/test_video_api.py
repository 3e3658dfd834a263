"""GLM-4.1V's per-prompt media limits, refused at submission over the real API (JSON and multipart)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from jobs.config import Settings

A = {"Authorization": "Bearer test-key"}


@pytest.mark.parametrize(
    ("where", "prompt", "token"),
    [
        ("job", "Compare <|begin_of_video|><|video|><|end_of_video|> with this one.", "<|video|>"),
        ("item", "Also look at <|begin_of_image|><|image|><|end_of_image|>", "<|image|>"),
    ],
)
def test_json_prompt_asking_for_more_media_is_422(
    client: TestClient, settings: Settings, where: str, prompt: str, token: str
) -> None:
    item = {"custom_id": "clip", "uri": f"s3://{settings.s3.bucket}/in/clip.mp4"}
    body = {"items": [{**item, "prompt": prompt}]} if where == "item" else {"items": [item], "prompt": prompt}
    r = client.post("/v1/jobs", json=body, headers=A)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "prompt_media_limit"
    assert token in err["message"] and "one video per prompt" in err["message"]
    assert err["message"].startswith("job prompt" if where == "job" else "item 'clip'")


def test_multipart_prompt_asking_for_more_media_is_422(client: TestClient) -> None:
    files = [("file", ("clip.mp4", b"\x00\x00\x00\x18ftypisom", "video/mp4"))]
    r = client.post("/v1/jobs", files=files, data={"prompt": "and <|video|> too"}, headers=A)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "prompt_media_limit"


def test_plain_prompt_about_a_video_is_accepted(client: TestClient) -> None:
    files = [("file", ("clip.mp4", b"\x00\x00\x00\x18ftypisom", "video/mp4"))]
    r = client.post(
        "/v1/jobs", files=files, data={"prompt": "What happens? Answer in <answer> tags."}, headers=A
    )
    assert r.status_code == 202, r.text
