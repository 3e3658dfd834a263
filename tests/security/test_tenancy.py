"""A tenant reaches only its own objects: attacked with two tenants' keys against the real API, Postgres,
Redis and S3 (SECURITY.md, "What a key can reach").

The grants in force are the test session's (tests/conftest.py: the whole test bucket to every tenant),
so these attacks also show that no grant opens the server's own prefixes or another tenant's uploads.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from api.app import create_app
from api.auth import parse_keys
from jobs.adapters.uris import read_source
from jobs.config import Settings
from jobs.errors import ForbiddenUri
from tests.fixtures.make_fixtures import text_pdf
from tests.integration import with_section

A = {"Authorization": "Bearer test-key"}  # tenant-a
B = {"Authorization": "Bearer other-key"}  # tenant-b


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def _upload(client: TestClient, headers: dict[str, str], name: str, data: bytes) -> tuple[str, str]:
    """(job id, the s3:// URI the upload was stored at) of a one-file upload job."""
    r = client.post("/v1/jobs", files=[("file", (name, data, "application/pdf"))], headers=headers)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    from sqlalchemy import select

    from jobs.adapters.db import session_factory
    from jobs.models import Item

    with session_factory(client.app.state.settings)() as s:  # type: ignore[attr-defined]
        uri = s.scalar(select(Item.uri).where(Item.job_id == uuid.UUID(job_id)))
    assert uri
    return job_id, uri


def _submit(client: TestClient, headers: dict[str, str], uri: str) -> tuple[int, dict[str, str]]:
    r = client.post("/v1/jobs", json={"items": [{"custom_id": "probe", "uri": uri}]}, headers=headers)
    return r.status_code, r.json().get("error", {})


def test_a_tenant_cannot_name_another_tenants_upload(client: TestClient, settings: Settings) -> None:
    """The hole: B named A's upload key in a job of its own, the item succeeded and /ui showed B A's page."""
    secret = text_pdf(1, f"A's secret {uuid.uuid4().hex}")
    _, uri = _upload(client, A, "secret.pdf", secret)
    assert "/uploads/tenant-a/" in uri
    status, err = _submit(client, B, uri)
    assert (status, err["code"]) == (422, "forbidden_uri"), err
    assert "A's secret" not in err["message"] and "%PDF" not in err["message"]
    # A names its own upload again, as the CLI and a resubmission do.
    assert _submit(client, A, uri)[0] == 202


def test_no_oracle_for_whether_another_tenant_uploaded_a_file(client: TestClient, settings: Settings) -> None:
    """Upload keys are content-addressed: a different answer for a real and a made-up key would tell B
    whether A uploaded a file B has a copy of."""
    data = text_pdf(1, f"common {uuid.uuid4().hex}")
    _, real = _upload(client, A, "common.pdf", data)
    made_up = real.replace(real.split("/")[-2], "f" * 64)
    answers = [_submit(client, B, uri) for uri in (real, made_up)]
    assert answers[0][0] == answers[1][0] == 422
    assert answers[0][1]["message"].replace(real, "X") == answers[1][1]["message"].replace(made_up, "X")


@pytest.mark.parametrize(
    "key",
    [
        "files/tenant-a/file-0123456789abcdef01234567",  # A's OpenAI batch input file
        "media/{sha}/1288px/page-00001.png",  # rendered pages (content-addressed, shared)
        "media/{sha}/text/page-00001.txt",
        "results/{uuid}/{uuid}/v1.json",
        "jobs/{uuid}/output.jsonl",
        "batches/batch_0123/rejected.jsonl",
        "uploads/tenant-b/../tenant-a/{sha}/secret.pdf",  # a way out of B's own prefix
        "uploads/tenant-b/./x.pdf",
    ],
)
def test_the_servers_own_objects_are_never_reachable_by_naming_them(
    client: TestClient, settings: Settings, key: str
) -> None:
    uri = f"s3://{settings.s3.bucket}/" + key.format(sha="a" * 64, uuid=uuid.uuid4())
    status, err = _submit(client, B, uri)
    assert (status, err["code"]) == (422, "forbidden_uri"), err


def test_a_batch_input_file_is_not_quoted_in_an_error(client: TestClient, settings: Settings) -> None:
    """Naming A's batch input file used to fail with an error that quoted its first bytes. Now it is
    refused by name; and a media error never quotes content, whoever's it is."""
    r = client.post(
        "/v1/files", files={"file": ("in.jsonl", b'{"custom_id": "secret-id"}\n')}, data={"purpose": "batch"},
        headers=A,
    )  # fmt: skip
    assert r.status_code == 200, r.text
    status, err = _submit(client, B, f"s3://{settings.s3.bucket}/files/tenant-a/{r.json()['id']}")
    assert (status, err["code"]) == (422, "forbidden_uri") and "secret-id" not in err["message"]


def test_sniffing_errors_never_quote_content() -> None:
    from workers.media.pdf import open_pdf
    from workers.media.sniff import family

    secret = b'{"custom_id": "secret-id", "api_key": "sk-123"}\n'
    for call in (lambda: family(secret, "x.pdf"), lambda: family(secret, "x.bin"), lambda: open_pdf(secret)):
        with pytest.raises(Exception) as refused:
            call()
        assert "secret" not in str(refused.value) and "sk-123" not in str(refused.value), refused.value


def test_the_worker_checks_the_tenant_again_when_it_reads(settings: Settings) -> None:
    """Grants may be taken back after submission: the prep worker refuses then, for the item's tenant."""
    from jobs.adapters.storage import S3BlobStore

    store = S3BlobStore(settings)
    key = f"granted/{uuid.uuid4().hex}.pdf"
    store.put(key, text_pdf(1, "granted"))
    uri = f"s3://{settings.s3.bucket}/{key}"
    assert read_source(store, settings, uri, "tenant-a", 1 << 20).startswith(b"%PDF")
    revoked = with_section(settings, "inputs", grants={})
    with pytest.raises(ForbiddenUri):
        read_source(store, revoked, uri, "tenant-a", 1 << 20)
    with pytest.raises(ForbiddenUri):  # another tenant's upload, whatever the grants
        read_source(
            store, settings, f"s3://{settings.s3.bucket}/uploads/tenant-b/x/y.pdf", "tenant-a", 1 << 20
        )


def test_grants_by_tenant(settings: Settings) -> None:
    bucket = settings.s3.bucket
    only_acme = with_section(settings, "inputs", grants={"tenant-a": [f"s3://{bucket}/acme/"]})
    with TestClient(create_app(only_acme)) as c:
        assert _submit(c, A, f"s3://{bucket}/acme/doc.pdf")[0] == 202
        assert _submit(c, B, f"s3://{bucket}/acme/doc.pdf")[1]["code"] == "forbidden_uri"
        assert _submit(c, A, f"s3://{bucket}/acme-evil/doc.pdf")[1]["code"] == "forbidden_uri"


def test_direct_reads_of_another_tenants_objects_are_not_found(client: TestClient) -> None:
    job_id, _ = _upload(client, A, "mine.pdf", text_pdf(1, "mine"))
    file_id = client.post(
        "/v1/files", files={"file": ("in.jsonl", b"{}\n")}, data={"purpose": "batch"}, headers=A
    ).json()["id"]
    batch = client.post(
        "/v1/batches",
        json={"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"},
        headers=A,
    ).json()["id"]
    for method, path in [
        ("GET", f"/v1/jobs/{job_id}"),
        ("GET", f"/v1/jobs/{job_id}/results"),
        ("POST", f"/v1/jobs/{job_id}/cancel"),
        ("POST", f"/v1/jobs/{job_id}/retry"),
        ("GET", f"/v1/files/{file_id}"),
        ("GET", f"/v1/files/{file_id}/content"),
        ("DELETE", f"/v1/files/{file_id}"),
        ("GET", f"/v1/batches/{batch}"),
        ("POST", f"/v1/batches/{batch}/cancel"),
    ]:
        r = client.request(method, path, headers=B)
        assert r.status_code == 404, (method, path, r.status_code, r.text[:200])
        if method == "GET":
            assert client.get(path, headers=A).status_code == 200, path  # the owner reads it
    assert file_id not in {f["id"] for f in client.get("/v1/files", headers=B).json()["data"]}
    assert batch not in {b["id"] for b in client.get("/v1/batches", headers=B).json()["data"]}
    assert client.get(f"/v1/files/{file_id}", headers=A).status_code == 200  # B's DELETE did nothing
    client.cookies.set("vlmq_key", "other-key")  # the results page signs in with a cookie
    assert client.get(f"/ui/jobs/{job_id}").status_code == 404
    client.cookies.set("vlmq_key", "test-key")
    assert client.get(f"/ui/jobs/{job_id}").status_code == 200
    client.cookies.clear()


@pytest.mark.parametrize("tenant", ["a/b", "../x", "", "a b", "x" * 65, "ü"])
def test_a_tenant_name_cannot_reach_into_another_tenants_prefix(tenant: str) -> None:
    """Tenant "a" would own the upload prefix of tenant "a/b": such names are refused at start."""
    with pytest.raises(ValueError):
        parse_keys(f"key:{tenant}")


def test_keys_settings_with_a_bad_tenant_refuse_to_start(settings: Settings) -> None:
    bad = with_section(settings, "api", keys=SecretStr("k1:tenant-a,k2:a/b"))
    with pytest.raises(ValueError, match="not a valid name"):
        create_app(bad)
