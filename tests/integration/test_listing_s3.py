"""Sources enumerated page by page against a real S3 server (moto's): a glob over 2,500 objects under
nested prefixes, resumed from a stored cursor by another client, and manifests read in ranged pages."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from jobs.adapters.listing import Page, list_page, parse_pattern
from jobs.adapters.manifests import ManifestPage, manifest_head, manifest_page
from jobs.adapters.storage import S3BlobStore
from jobs.config import S3Settings, Settings
from jobs.errors import InvalidInput
from tests.conftest import RUN_ID

BUCKET = f"vlmq-listing-{RUN_ID}"
MATCHING = (
    [f"corpus/pdfs/top-{i:03d}.pdf" for i in range(100)]  # ** as zero segments
    + [f"corpus/pdfs/{y}/doc-{i:04d}.pdf" for y in ("2023", "2024") for i in range(600)]
    + [
        f"corpus/pdfs/2024/{m:02d}/{d:02d}/scan {i}.pdf"
        for m in range(1, 13)
        for d in (1, 15)
        for i in range(45)
    ]
    + [f"corpus/pdfs/données/été/ß {i}.pdf" for i in range(120)]
)
OTHER = (
    [f"corpus/pdfs/2024/notes-{i}.txt" for i in range(150)]
    + [f"corpus/pdfs/2024/doc-{i}.pdf.bak" for i in range(50)]
    + ["corpus/pdfs/", "corpus/pdfs/2024/", "corpus/pdfs/fake.pdf/", "corpus/pdfs-old/x.pdf", "corpus/y.pdf"]
)


def _client(endpoint: str) -> Any:
    """The boto3 client S3BlobStore builds from Settings, as a worker would hold it. (Read through its
    private attribute until S3BlobStore grows a public accessor: storage.py is not this change's.)"""
    s3 = S3Settings(endpoint_url=endpoint, access_key_id="testing", secret_access_key="testing")
    return S3BlobStore(Settings(s3=s3))._client


@pytest.fixture(scope="module")
def s3(s3_endpoint: str) -> Any:
    """A bucket of this module's own, filled once: ~2,700 objects, 2,500 of them under the glob."""
    client = _client(s3_endpoint)
    client.create_bucket(Bucket=BUCKET)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: client.put_object(Bucket=BUCKET, Key=k, Body=k.encode()), MATCHING + OTHER))
    return client


def _pages(client: Any, uri: str, cursor: str | None = None) -> Iterator[Page]:
    pattern = parse_pattern(uri)
    while True:
        page = list_page(client, pattern, cursor, limit=1000)
        yield page
        if (cursor := page.cursor) is None:
            return


def test_every_matching_key_once_in_key_order(s3: Any) -> None:
    pages = list(_pages(s3, f"s3://{BUCKET}/corpus/pdfs/**/*.pdf"))
    assert len(MATCHING) == 2500
    assert [e.uri for p in pages for e in p.entries] == [f"s3://{BUCKET}/{k}" for k in sorted(MATCHING)]
    assert len(pages) == 3  # 2,703 keys under the prefix, 1,000 a page
    entry = pages[0].entries[0]
    key = entry.uri.removeprefix(f"s3://{BUCKET}/")
    assert (entry.etag, entry.size) == (hashlib.md5(key.encode()).hexdigest(), len(key.encode()))


def test_a_plain_prefix_lists_everything_under_it_but_folder_markers(s3: Any) -> None:
    uris = [e.uri for p in _pages(s3, f"s3://{BUCKET}/corpus/pdfs") for e in p.entries]
    expected = sorted(k for k in MATCHING + OTHER if k.startswith("corpus/pdfs/") and not k.endswith("/"))
    assert uris == [f"s3://{BUCKET}/{k}" for k in expected]


def test_a_listing_resumes_from_a_stored_cursor_with_another_client(s3: Any, s3_endpoint: str) -> None:
    uri = f"s3://{BUCKET}/corpus/pdfs/2024/**/*.pdf"
    first = list_page(s3, parse_pattern(uri), None, limit=1000)
    assert first.cursor is not None
    rest = [e.uri for p in _pages(_client(s3_endpoint), uri, first.cursor) for e in p.entries]
    expected = sorted(k for k in MATCHING if k.startswith("corpus/pdfs/2024/"))
    assert [e.uri for e in first.entries] + rest == [f"s3://{BUCKET}/{k}" for k in expected]


def test_a_missing_bucket_is_invalid_input(s3: Any) -> None:
    missing = f"vlmq-missing-{uuid.uuid4().hex[:8]}"
    with pytest.raises(InvalidInput, match=f"bucket '{missing}' does not exist"):
        list_page(s3, parse_pattern(f"s3://{missing}/a/*.pdf"), None)
    with pytest.raises(InvalidInput, match=f"bucket '{missing}' does not exist"):
        manifest_page(s3, f"s3://{missing}/list.jsonl", 0)
    with pytest.raises(InvalidInput, match="the object does not exist"):
        manifest_head(s3, f"s3://{BUCKET}/manifests/missing.jsonl")


def _manifest_pages(client: Any, uri: str) -> Iterator[ManifestPage]:
    offset: int | None = 0
    line, etag = 1, None
    while offset is not None:
        page = manifest_page(client, uri, offset, limit=1000, line=line, etag=etag)
        yield page
        offset, line, etag = page.next_offset, page.next_line, page.etag


def test_a_jsonl_manifest_is_read_in_pages(s3: Any) -> None:
    lines = [json.dumps({"uri": f"s3://{BUCKET}/in/{i}.pdf", "custom_id": f"c{i}"}) for i in range(2500)]
    lines[7] = '{"uri": broken'
    s3.put_object(Bucket=BUCKET, Key="manifests/list.jsonl", Body="\n".join(lines).encode() + b"\n")
    pages = list(_manifest_pages(s3, f"s3://{BUCKET}/manifests/list.jsonl"))
    entries = [e for p in pages for e in p.entries]
    assert [len(p.entries) for p in pages] == [1000, 1000, 500]
    assert [e.line for e in entries] == list(range(1, 2501))
    assert [e.custom_id for e in entries if not e.error] == [f"c{i}" for i in range(2500) if i != 7]
    assert "line 8 (byte" in str(entries[7].error)


def test_a_csv_manifest_is_read_in_pages(s3: Any) -> None:
    rows = ["uri,prompt"] + [f's3://{BUCKET}/in/{i}.pdf,"Say ""{i}"", then stop"' for i in range(2500)]
    s3.put_object(Bucket=BUCKET, Key="manifests/list.csv", Body="\r\n".join(rows).encode())
    assert (
        manifest_head(s3, f"s3://{BUCKET}/manifests/list.csv")
        == hashlib.md5("\r\n".join(rows).encode()).hexdigest()
    )
    entries = [e for p in _manifest_pages(s3, f"s3://{BUCKET}/manifests/list.csv") for e in p.entries]
    assert [e.prompt for e in entries] == [f'Say "{i}", then stop' for i in range(2500)]
    assert [e.line for e in entries] == list(range(2, 2502))


def test_a_manifest_replaced_between_pages_is_refused(s3: Any) -> None:
    body = b"".join(b'{"uri": "s3://%s/in/%d.pdf"}\n' % (BUCKET.encode(), i) for i in range(20))
    s3.put_object(Bucket=BUCKET, Key="manifests/moving.jsonl", Body=body)
    uri = f"s3://{BUCKET}/manifests/moving.jsonl"
    first = manifest_page(s3, uri, 0, limit=10)
    s3.put_object(Bucket=BUCKET, Key="manifests/moving.jsonl", Body=b"\n" + body)
    with pytest.raises(InvalidInput, match="changed while it was being read"):
        manifest_page(s3, uri, first.next_offset or 0, line=first.next_line, etag=first.etag)
