"""Blob storage: the BlobStore protocol and its S3 implementation. The only module of jobs/ with boto3.

Keys are deterministic so every write is idempotent: a retried task overwrites the same object.
"""

from __future__ import annotations

import hashlib
import tempfile
import threading
import uuid
from collections.abc import Callable
from typing import IO, Any, Protocol

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from jobs.config import Settings
from jobs.errors import InvalidInput, SourceTooLarge, StorageUnavailable

_MISSING = {"NoSuchKey", "404", "NotFound", "NoSuchBucket"}
# A streamed upload holds at most 2 parts of 8 MiB in memory (s3transfer reads ahead 10 by default).
_STREAM = TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=8 << 20, max_concurrency=2)
_STREAM.max_in_memory_upload_chunks = 2  # s3transfer's setting, which boto3's constructor does not take
SPOOL_BYTES = 8 * 1024 * 1024


class BlobStore(Protocol):
    bucket: str

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str: ...

    def get(self, key: str) -> bytes: ...

    def get_start(self, key: str, n: int) -> bytes: ...

    def read_uri(self, uri: str, max_bytes: int) -> bytes: ...

    def put_file(self, key: str, f: IO[bytes], content_type: str = "application/octet-stream") -> str: ...

    def delete(self, key: str) -> None: ...


# Where the server writes in its own bucket. A tenant never reaches these by naming them in a job, except
# its own uploads (jobs.adapters.uris); a new writer's prefix belongs here.
UPLOADS, SERVER_PREFIXES = "uploads/", ("uploads/", "files/", "media/", "results/", "jobs/", "batches/")


def spool() -> IO[bytes]:
    """A file to write an upload into line by line before ``put_file``: in memory up to SPOOL_BYTES,
    on disk past it, so a file of any size is built in bounded memory."""
    return tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)


def uploads_prefix(tenant: str) -> str:
    return f"{UPLOADS}{tenant}/"


def split_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise InvalidInput(f"not an s3:// URI: {uri}")
    bucket, _, key = uri[5:].partition("/")
    if not bucket or not key:
        raise InvalidInput(f"s3 URI needs a bucket and a key: {uri}")
    return bucket, key


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(f: IO[bytes]) -> str:
    """The sha256 of a seekable file read in 1 MiB pieces; the file is left at its start."""
    f.seek(0)
    digest = hashlib.file_digest(f, "sha256").hexdigest()  # type: ignore[arg-type]
    f.seek(0)
    return digest


def upload_key(tenant: str, digest: str, filename: str) -> str:
    """Content-addressed within the tenant's own prefix: ``digest`` is the bytes' sha256 (hex)."""
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "_" for c in filename)[-100:]
    return f"{uploads_prefix(tenant)}{digest}/{safe.lstrip('.') or 'upload'}"


def _size_tag(size: int | str) -> str:
    return f"{size}px" if isinstance(size, int) else size


def _pages_tag(pages: list[int]) -> str:
    return "pages-" + hashlib.sha256(",".join(map(str, pages)).encode()).hexdigest()[:12]


def media_key(source_sha: str, size: int | str, page: int) -> str:
    """Content-addressed: the same source rendered the same way lands on the same key.

    ``size`` is the longest side in pixels, or a tag such as ``"150dpi"``.
    """
    return f"media/{source_sha}/{_size_tag(size)}/page-{page:05d}.png"


def manifest_key(source_sha: str, size: int | str, pages: list[int]) -> str:
    """The manifest of a unit of several pages (granularity "document"): a JSON list of page images."""
    return f"media/{source_sha}/{_size_tag(size)}/{_pages_tag(pages)}.json"


def text_key(source_sha: str, page: int | list[int]) -> str:
    """The PDF text layer of a page (or of a unit's pages), beside the rendered images; it does not
    depend on the render size."""
    name = f"page-{page:05d}" if isinstance(page, int) else _pages_tag(page)
    return f"media/{source_sha}/text/{name}.txt"


def result_key(job_id: uuid.UUID, item_id: uuid.UUID, version: int) -> str:
    return f"results/{job_id}/{item_id}/v{version}.json"


def job_output_key(job_id: uuid.UUID, name: str) -> str:
    return f"jobs/{job_id}/{name}"


class S3BlobStore:
    def __init__(self, settings: Settings) -> None:
        s3 = settings.s3
        secret = s3.secret_access_key.get_secret_value() if s3.secret_access_key else None
        self.bucket = s3.bucket
        self._client = boto3.client(
            "s3",
            endpoint_url=s3.endpoint_url,
            region_name=s3.region,
            aws_access_key_id=s3.access_key_id,
            aws_secret_access_key=secret,
            config=Config(
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=5,
                read_timeout=60,
                max_pool_connections=max(10, 2 * s3.put_concurrency),  # botocore's default is 10
            ),
        )
        self._create = s3.create_bucket
        self._ready = False
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        """The boto3 client, for what this store does not wrap: listing a tenant's prefix (jobs.listings)."""
        return self._client

    def _ensure_bucket(self) -> None:
        with self._lock:
            if self._ready or not self._create:
                return
            try:
                self._call(self._client.head_bucket, Bucket=self.bucket)  # unreachable: StorageUnavailable
            except ClientError:
                self._call(self._client.create_bucket, Bucket=self.bucket)
            self._ready = True

    def _call(self, fn: Callable[..., Any], **kw: Any) -> Any:
        try:
            return fn(**kw)
        except (EndpointConnectionError, BotoCoreError) as e:
            raise StorageUnavailable(f"S3 unreachable: {e}") from e

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        self._ensure_bucket()
        self._call(self._client.put_object, Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)
        return key

    def get(self, key: str) -> bytes:
        return self._get(self.bucket, key, max_bytes=None)

    def get_start(self, key: str, n: int) -> bytes:
        """The first ``n`` bytes of an object (a ranged GET): a file's header without its body."""
        return self._get(self.bucket, key, max_bytes=None, first=n)

    def put_file(self, key: str, f: IO[bytes], content_type: str = "application/octet-stream") -> str:
        """Stream a file object to S3 (multipart above 8 MiB): memory stays bounded whatever its size."""
        self._ensure_bucket()
        extra = {"ContentType": content_type}
        upload = self._client.upload_fileobj
        self._call(upload, Fileobj=f, Bucket=self.bucket, Key=key, ExtraArgs=extra, Config=_STREAM)
        return key

    def delete(self, key: str) -> None:
        self._ensure_bucket()
        self._call(self._client.delete_object, Bucket=self.bucket, Key=key)

    def read_uri(self, uri: str, max_bytes: int) -> bytes:
        """Whether ``uri`` may be read is the caller's policy (jobs.adapters.uris), checked before this."""
        bucket, key = split_s3_uri(uri)
        return self._get(bucket, key, max_bytes=max_bytes)

    def _get(self, bucket: str, key: str, max_bytes: int | None, first: int | None = None) -> bytes:
        self._ensure_bucket()
        span = {"Range": f"bytes=0-{first - 1}"} if first else {}
        try:
            obj = self._call(self._client.get_object, Bucket=bucket, Key=key, **span)
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if code in _MISSING:
                raise InvalidInput(f"s3://{bucket}/{key} does not exist") from e
            raise StorageUnavailable(f"S3 error {code} reading s3://{bucket}/{key}") from e
        size = obj.get("ContentLength") or 0
        if max_bytes is not None and size > max_bytes:
            obj["Body"].close()
            raise SourceTooLarge(f"s3://{bucket}/{key} is {size} bytes; the limit is {max_bytes}")
        body = obj["Body"]
        try:
            return body.read()
        finally:
            body.close()

    def ping(self) -> None:
        self._ensure_bucket()
        self._call(self._client.head_bucket, Bucket=self.bucket)
