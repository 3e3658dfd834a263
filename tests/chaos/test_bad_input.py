"""Bad input never breaks the queue: the corrupt-media corpus (tests/fixtures, plus generated garbage)
in a 200-item job through real workers, each file failing alone with a specific code; and the OpenAPI
schema fuzzed by schemathesis against the real app: every answer a 4xx or a success, never a 500."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings

from api.app import create_app
from jobs.config import Settings
from tests.chaos.checks import exactly_once, no_secrets_in_logs, result_lines
from tests.chaos.stack import Stack

pytestmark = [pytest.mark.chaos, pytest.mark.slow]
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MEDIA_CODES = {
    "corrupt_media", "encrypted_document", "empty_document", "too_many_pages", "unsupported_media",
    "source_too_large", "invalid_input",
}  # fmt: skip
N = 200


def _corpus() -> dict[str, bytes]:
    files = {
        p.name: p.read_bytes() for p in sorted(FIXTURES.iterdir()) if p.suffix in (".pdf", ".png", ".jpg")
    }
    assert len(files) >= 5, "the corrupt-media corpus is missing"
    return {
        **files,
        "empty.pdf": b"",
        "random.bin": os.urandom(3000),
        "png-header-only.png": b"\x89PNG\r\n\x1a\n" + os.urandom(200),
        "pdf-header-garbage.pdf": b"%PDF-1.7\n" + os.urandom(2000),
        "oversized.png": b"\x89PNG\r\n\x1a\n" + b"\0" * 70_000,  # over VLMQ_LIMITS__MAX_SOURCE_BYTES below
    }


@pytest.mark.stack_env(VLMQ_LIMITS__MAX_SOURCE_BYTES="60000")
def test_corrupt_media_corpus_fails_item_by_item(stack: Stack) -> None:
    corpus = _corpus()
    bad = [stack.put(f"bad/{i:03d}-{name}", data) for i in range(10) for name, data in corpus.items()]
    bad.append(f"s3://{stack.bucket}/bad/does-not-exist.pdf")
    good = stack.put_images(N - len(bad))
    t0 = time.monotonic()
    job = stack.submit(bad + good)
    done, t1 = stack.wait_terminal(job["id"])
    assert done["status"] == "completed"
    figures = exactly_once(stack, job["id"], N, "corrupt-media corpus", t1 - t0)
    assert (figures.failures, figures.results) == (len(bad), len(good))
    lines = result_lines(stack, job["id"])
    codes = {x["custom_id"]: x["error"]["code"] for x in lines if x["status"] == "failed"}
    assert set(codes.values()) <= MEDIA_CODES, codes  # each a specific reason, no generic error
    by_name = {bad[int(cid.split("-")[1])].rsplit("/", 1)[1]: code for cid, code in codes.items()}
    assert by_name["does-not-exist.pdf"] == "invalid_input"
    assert by_name["000-oversized.png"] == "source_too_large"
    assert by_name["000-encrypted-no-password.pdf"] == "encrypted_document"
    no_secrets_in_logs(stack)


def test_fuzzed_requests_never_get_a_500(settings: Settings) -> None:
    """Every operation of the OpenAPI schema, with generated (valid and invalid) parameters and bodies,
    authenticated and not, against the app on this session's real Postgres, Redis and S3."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(settings))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {
        "/v1/jobs",
        "/v1/jobs/{job_id}/cancel",
        "/v1/jobs/{job_id}/retry",
    }
    seen: list[int] = []
    for op in operations:

        @given(case=op.as_strategy())
        @hypothesis_settings(
            max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def fuzz(case: schemathesis.Case) -> None:
            for headers in (LOCAL_KEY, {}):
                response = case.call(headers=headers)
                seen.append(response.status_code)
                assert response.status_code < 500, (
                    f"{case.method} {case.formatted_path}: {response.text[:500]}"
                )

        fuzz()
    assert any(400 <= c < 500 for c in seen) and any(c < 300 for c in seen)  # both kinds were exercised


LOCAL_KEY = {"Authorization": "Bearer test-key"}  # tests/conftest.py's key for tenant-a
