"""The API surface attacked as a hostile client would, against the real API on a socket (uvicorn, real
Postgres, Redis and S3): what the server fetches, what it parses, what it shows, and who may read
/metrics. SECURITY.md lists the promises these tests keep.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
from pydantic import SecretStr

from jobs.config import Settings
from tests.conftest import METRICS_TOKEN
from tests.integration import serving, with_section

A = {"Authorization": "Bearer test-key"}


@pytest.fixture(scope="module")
def api(service_env: dict[str, str]) -> Iterator[str]:
    """One API for the module, https allowed as an operator may allow it (the SSRF probes need that)."""
    with pytest.MonkeyPatch.context() as mp:
        for k, v in service_env.items():
            mp.setenv(k, v)
        from jobs.config import get_settings

        get_settings.cache_clear()
        settings = with_section(get_settings(), "inputs", allowed_schemes=["s3", "https"])
        get_settings.cache_clear()
    with serving(settings) as port:
        yield f"http://127.0.0.1:{port}"


def _error(r: httpx.Response) -> dict[str, str]:
    body = r.json()
    assert set(body) == {"error"}, body  # the one documented shape, never {"detail": ...}
    return dict(body["error"])


SSRF = [
    "https://127.0.0.1/a.pdf",
    "https://127.1/a.pdf",
    "https://2130706433/a.pdf",
    "https://0x7f000001/a.pdf",
    "https://0177.0.0.1/a.pdf",
    "https://[::1]/a.pdf",
    "https://[::ffff:127.0.0.1]/a.pdf",
    "https://[::ffff:7f00:1]/a.pdf",
    "https://169.254.169.254/latest/meta-data/",
    "https://[fd00:ec2::254]/latest/meta-data/",
    "https://10.0.0.1/a.pdf",
    "https://172.16.0.1/a.pdf",
    "https://192.168.1.1/a.pdf",
    "https://100.64.0.1/a.pdf",
    "https://0.0.0.0/a.pdf",
    "https://localhost/a.pdf",
    "https://metadata.localhost/a.pdf",
    "https://user:pass@example.com/a.pdf",
    "file:///etc/passwd",
    "http://example.com/a.pdf",
    "gopher://127.0.0.1:6379/_INFO",
]


@pytest.mark.parametrize("uri", SSRF)
def test_no_private_address_or_other_scheme_is_taken(api: str, uri: str) -> None:
    """Refused at submission, before any connection: no traffic ever goes to these addresses."""
    r = httpx.post(f"{api}/v1/jobs", json={"items": [{"custom_id": "x", "uri": uri}]}, headers=A)
    assert r.status_code == 422, r.text
    assert _error(r)["code"] == "forbidden_uri", r.text


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/v1/nothing-here", 404, "not_found"),
        ("GET", "/v1/jobs/not-a-uuid", 422, "invalid_request"),
        ("PUT", "/v1/jobs", 405, "method_not_allowed"),
        ("DELETE", "/v1/batches", 405, "method_not_allowed"),
        ("GET", f"/v1/jobs/{uuid.uuid4()}", 404, "not_found"),
    ],
)
def test_every_error_has_the_documented_shape(
    api: str, method: str, path: str, status: int, code: str
) -> None:
    r = httpx.request(method, f"{api}{path}", headers=A)
    assert r.status_code == status, r.text
    err = _error(r)
    assert err["code"] == code and err["message"], err


def test_a_broken_multipart_body_has_the_documented_shape(api: str) -> None:
    headers = {**A, "Content-Type": "multipart/form-data; boundary=B"}
    body = b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.pdf"\r\n\r\nx\r\n--B'  # no end
    for path in ("/v1/jobs", "/v1/files"):
        r = httpx.post(f"{api}{path}", content=body + b"\r\nnot a part", headers=headers)
        assert r.status_code in (400, 422), r.text
        assert _error(r)["code"] in ("invalid_request", "invalid_input"), r.text


def test_deeply_nested_or_odd_json_is_refused_not_crashed(api: str) -> None:
    deep = '{"items": ' + "[" * 100_000 + "]" * 100_000 + "}"
    for body in (deep, '{"items": [{"custom_id": "a", "uri": 1e999}]}', "\xff\xfe", "null", "[]"):
        r = httpx.post(f"{api}/v1/jobs", content=body, headers={**A, "Content-Type": "application/json"})
        assert r.status_code == 422, (body[:40], r.status_code, r.text[:200])
        assert _error(r)["code"] == "invalid_request"
    assert httpx.get(f"{api}/healthz").status_code == 200  # still up


def test_an_upload_name_never_leaves_the_tenants_prefix(api: str, settings: Settings) -> None:
    from sqlalchemy import select

    from jobs.adapters.db import session_factory
    from jobs.models import Item

    names = ["../../etc/passwd", "..\\..\\boot.ini", "/abs/path.pdf", ".hidden.pdf", "ok name ü.pdf"]
    files = [("file", (n, b"%PDF-1.7 " + n.encode(), "application/pdf")) for n in names]
    r = httpx.post(f"{api}/v1/jobs", files=files, headers=A)
    assert r.status_code == 202, r.text
    with session_factory(settings)() as s:
        items = s.execute(select(Item.custom_id, Item.uri).where(Item.job_id == uuid.UUID(r.json()["id"])))
        rows = {custom_id: uri for custom_id, uri in items}
    prefix = f"s3://{settings.s3.bucket}/uploads/tenant-a/"
    assert sorted(rows) == sorted(["passwd", "boot.ini", "path.pdf", ".hidden.pdf", "ok name ü.pdf"])
    for uri in rows.values():
        assert uri is not None and uri.startswith(prefix), uri
        sha, name = uri.removeprefix(prefix).split("/")  # one level: the content's hash, then a name
        assert len(sha) == 64 and name and not name.startswith(".") and name.isascii(), uri


def test_a_custom_id_with_markup_is_escaped_on_the_results_page(api: str, settings: Settings) -> None:
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    uri = f"s3://{settings.s3.bucket}/in/{uuid.uuid4().hex}.pdf"
    r = httpx.post(f"{api}/v1/jobs", json={"items": [{"custom_id": evil, "uri": uri}]}, headers=A)
    assert r.status_code == 202, r.text
    page = httpx.get(f"{api}/ui/jobs/{r.json()['id']}", cookies={"vlmq_key": "test-key"})
    assert page.status_code == 200
    assert evil not in page.text and "&lt;script&gt;" in page.text


def test_metrics_need_the_scrape_token_not_a_tenant_key(api: str) -> None:
    """/metrics counts every tenant's jobs: it answered anyone before."""
    assert _error(httpx.get(f"{api}/metrics"))["code"] == "unauthorized"
    assert httpx.get(f"{api}/metrics", headers=A).status_code == 401  # a tenant's API key
    assert httpx.get(f"{api}/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    ok = httpx.get(f"{api}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert ok.status_code == 200 and "vlmq_jobs" in ok.text


def test_metrics_are_off_without_a_token(settings: Settings) -> None:
    off = with_section(settings, "api", metrics_token=None)
    with serving(off) as port:
        r = httpx.get(f"http://127.0.0.1:{port}/metrics", headers=A)
    assert r.status_code == 403 and "VLMQ_API__METRICS_TOKEN" in _error(r)["message"]
    empty = with_section(settings, "api", metrics_token=SecretStr(""))
    with serving(empty) as port:
        r = httpx.get(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": "Bearer x"})
    assert r.status_code == 403  # an empty token is no token
