"""Enumerating an S3 source one page at a time: a prefix with a glob, such as ``s3://corpus/pdfs/**/*.pdf``.

A worker lists a page, stores its items and the page's cursor in Postgres, and asks for the next page with
that cursor: it never holds the whole listing, and after a crash it resumes at the last stored cursor. A
manifest source (an object that lists the items) is read by jobs.adapters.manifests. Whether a tenant may
read the bucket at all is jobs.adapters.uris' rule, checked before this; the caller owns the boto3 client.

Glob semantics, on the key after the bucket (segments are separated by ``/``):
- ``*`` matches within one segment (never ``/``), ``?`` one character other than ``/``, ``[abc]``,
  ``[a-z]`` and ``[!abc]`` one character of (or not of) a class, never ``/``; an unclosed ``[`` is itself.
  There is no escape character (S3 keys may hold ``\\``): write a literal ``*``, ``?`` or ``[`` as ``[*]``;
- ``**`` as a whole segment matches zero or more segments: ``a/**/*.pdf`` matches ``a/x.pdf`` and
  ``a/b/c/x.pdf``; elsewhere (``a**b``) it is a ``*``;
- a trailing ``/`` means everything under it (``pdfs/*/`` is ``pdfs/*/**``);
- a URI with no wildcard is a prefix: ``s3://b/pdfs/`` and ``s3://b/pdfs`` both list everything under
  ``pdfs/`` (not ``pdfs-old/``), ``s3://b/`` the whole bucket.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from jobs.errors import InvalidInput, StorageUnavailable

S3Client = Any  # a boto3 S3 client (S3BlobStore's); no boto3 type stubs are installed
MAX_PATTERN = 1024  # characters: S3's own limit on a key
MAX_KEYS = 1000  # S3 answers at most this many keys per ListObjectsV2 call
_WILD = re.compile(r"[*?\[]")
# S3 error codes that say the source itself is wrong, which no retry can fix: the job's input is refused.
_REFUSED = {
    "NoSuchBucket": "bucket {bucket!r} does not exist",
    "InvalidBucketName": "{bucket!r} is not a valid bucket name",
    "AccessDenied": "access to bucket {bucket!r} is denied",
    "AllAccessDisabled": "access to bucket {bucket!r} is denied",
    "NoSuchKey": "the object does not exist",
    "PreconditionFailed": "the object changed while it was being read",
}


@dataclass(frozen=True)
class Pattern:
    bucket: str
    list_prefix: str  # the literal start of every matching key: S3 lists only under it
    regex: re.Pattern[str]

    def matches(self, key: str) -> bool:
        return self.regex.fullmatch(key) is not None


@dataclass(frozen=True)
class Entry:
    uri: str
    etag: str  # without S3's quotes
    size: int
    last_modified: datetime


@dataclass(frozen=True)
class Page:
    entries: list[Entry]  # may be fewer than the limit, even none, with more pages to come
    cursor: str | None  # the last key S3 returned, matching or not; None: the listing is done


def parse_pattern(uri: str) -> Pattern:
    """A source URI as a pattern (the module's docstring has the semantics); InvalidInput if malformed."""
    bucket, key = _split(uri)
    if not _WILD.search(key) and key and not key.endswith("/"):
        key += "/"  # a plain prefix names a folder: "pdfs" must not list "pdfs-old/"
    if not key or key.endswith("/"):
        key += "**"
    return Pattern(bucket, _WILD.split(key, maxsplit=1)[0], re.compile(_translate(key), re.DOTALL))


def _split(uri: str) -> tuple[str, str]:
    if len(uri) > MAX_PATTERN:
        raise InvalidInput(f"a source pattern is at most {MAX_PATTERN} characters; this one is {len(uri)}")
    if not uri.startswith("s3://"):
        raise InvalidInput(f"a source pattern must be an s3:// URI: {uri!r}")
    bucket, _, key = uri[5:].partition("/")
    if not bucket or _WILD.search(bucket):
        raise InvalidInput(f"a source pattern needs a bucket name, without wildcards: {uri!r}")
    if any(s in (".", "..") for s in key.split("/")):
        raise InvalidInput(f"'.' and '..' segments are not allowed in a source pattern: {uri!r}")
    return bucket, key


def _translate(key: str) -> str:
    """The key pattern as one regex. fnmatch alone does not do: its ``*`` crosses ``/`` and it has no
    ``**``. Every run of segments between two ``**`` is found at its earliest place, in an atomic group
    (``(?>...)``, as CPython's fnmatch does for ``*``): earliest is always enough, since the next ``**``
    takes whatever lies between, and no backtracking into it can make a hostile pattern exponential."""
    runs = _between_globstars(key.split("/"))
    if len(runs) == 1:
        return rf"\A{_joined(runs[0])}\Z"
    head, *middle, tail = runs
    regex = f"{_joined(head)}/" if head else ""
    regex += "".join(f"(?>(?:[^/]*/)*?{_joined(run)}/)" for run in middle)
    regex += f"(?:[^/]*/)*{_joined(tail)}" if tail else ".*"
    return rf"\A{regex}\Z"


def _between_globstars(segments: list[str]) -> list[list[str]]:
    """The runs of segments before, between and after the ``**`` segments (a repeated ``**`` is one)."""
    runs: list[list[str]] = [[]]
    for i, segment in enumerate(segments):
        if segment != "**":
            runs[-1].append(segment)
        elif i == 0 or segments[i - 1] != "**":
            runs.append([])
    return runs


def _joined(segments: list[str]) -> str:
    return "/".join(_segment(s) for s in segments)


def _segment(segment: str) -> str:
    """One segment's regex: fixed parts between stars, each interior one found at its earliest place."""
    fixed, i = [""], 0
    while i < len(segment):
        piece, i = _token(segment, i)
        if piece is None:
            fixed.append("")
        else:
            fixed[-1] += piece
    if len(fixed) == 1:
        return fixed[0]
    return fixed[0] + "".join(f"(?>[^/]*?{f})" for f in fixed[1:-1]) + "[^/]*" + fixed[-1]


def _token(segment: str, i: int) -> tuple[str | None, int]:
    """The regex of the token at ``segment[i]`` (None for a star) and where the next token starts."""
    c = segment[i]
    if c == "*":
        return None, i + 1
    if c == "?":
        return "[^/]", i + 1
    end = _class_end(segment, i) if c == "[" else -1
    if end > 0:
        return _class(segment[i + 1 : end]), end + 1
    return re.escape(c), i + 1


def _class_end(segment: str, i: int) -> int:
    """Where the class opened at ``segment[i]`` closes, or -1. A ``]`` first in the class is a member."""
    j = i + 1
    j += segment.startswith("!", j)
    j += segment.startswith("]", j)
    return segment.find("]", j)


def _class(body: str) -> str:
    negated = body.startswith("!")
    members = _members(body[1:] if negated else body)
    if negated:
        return f"[^{members}/]"
    return f"(?!/)[{members}]" if members else "(?!)"  # a range such as [+-0] would hold "/"


def _members(body: str) -> str:
    """A class's members, escaped (Python warns of "[[", "--", "&&"...); a reversed range is empty."""
    out, i = [], 0
    while i < len(body):
        if i + 2 < len(body) and body[i + 1] == "-":
            low, high = body[i], body[i + 2]
            out.append(f"{re.escape(low)}-{re.escape(high)}" if low <= high else "")
            i += 3
        else:
            out.append(re.escape(body[i]))
            i += 1
    return "".join(out)


def list_page(client: S3Client, pattern: Pattern, cursor: str | None, limit: int = MAX_KEYS) -> Page:
    """The next page of the keys ``pattern`` matches, in key order, after ``cursor`` (None: the start).

    The cursor is the last key seen, given back as StartAfter: unlike a ContinuationToken it is stable
    across processes and clients and never expires, so a listing resumes days later in another worker.
    Folder markers (keys ending in "/") are skipped."""
    if not 1 <= limit <= MAX_KEYS:
        raise ValueError(f"limit must be 1..{MAX_KEYS}, not {limit}")
    args = {"Bucket": pattern.bucket, "Prefix": pattern.list_prefix, "MaxKeys": limit}
    with s3_errors(pattern.bucket, f"listing s3://{pattern.bucket}/{pattern.list_prefix}"):
        response = client.list_objects_v2(**args, **({"StartAfter": cursor} if cursor else {}))
    objects = response.get("Contents", [])
    wanted = (o for o in objects if not o["Key"].endswith("/") and pattern.matches(o["Key"]))
    return Page([_entry(pattern.bucket, o) for o in wanted], _next_cursor(response, objects))


def _entry(bucket: str, obj: dict[str, Any]) -> Entry:
    etag = str(obj.get("ETag", "")).strip('"')
    return Entry(f"s3://{bucket}/{obj['Key']}", etag, int(obj.get("Size", 0)), obj["LastModified"])


def _next_cursor(response: dict[str, Any], objects: list[dict[str, Any]]) -> str | None:
    if not response.get("IsTruncated"):
        return None
    if not objects:  # no key to resume after: taking this as the end would drop the rest silently
        raise StorageUnavailable("S3 answered a truncated listing without keys")
    return str(objects[-1]["Key"])


def error_code(e: ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


@contextmanager
def s3_errors(bucket: str, what: str) -> Iterator[None]:
    """S3's errors as vlmq's: a missing or forbidden bucket or object is the job's input at fault
    (InvalidInput, never retried), anything else a transport failure to retry (StorageUnavailable)."""
    try:
        yield
    except ClientError as e:
        code = error_code(e)
        if code in _REFUSED:
            raise InvalidInput(f"{what}: {_REFUSED[code].format(bucket=bucket)}") from e
        raise StorageUnavailable(f"{what}: S3 error {code or 'without a code'}") from e
    except BotoCoreError as e:
        raise StorageUnavailable(f"{what}: S3 unreachable: {e}") from e
