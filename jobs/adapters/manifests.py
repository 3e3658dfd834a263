"""Reading a manifest source one page at a time: an S3 object that lists a job's items, one per line.

Formats, by the key's extension:
- ``.jsonl`` / ``.ndjson``: each line a JSON object: ``uri`` (required), ``custom_id`` and ``prompt``
  (strings), ``options`` (an object); no other field;
- ``.csv``: a header row on line 1 naming the columns ``uri`` (required), ``custom_id``, ``prompt`` (in any
  order and case); csv-module quoting, one record per line: a quoted field may hold commas and quotes,
  not a line break. An empty cell is an absent value.
Blank lines are skipped; a UTF-8 byte order mark is allowed. A bad line does not stop the listing: it
becomes an entry with ``error`` set, which the caller records as a failed item (invalid_manifest_line).
Compressed manifests (``.jsonl.gz``) are refused: a ranged read cannot start inside a gzip stream.

Paging: a page is one Range GET from a line's start (``offset``, the line numbered ``line``), read in
chunks until ``limit`` lines are complete, so memory stays near ``limit * max_line_bytes`` whatever the
object's size. The cursor to store is what the page gives: the offset and number of the line after it,
and the object's ETag, which passed back makes every later read refuse a changed object (If-Match), whose
offsets would no longer fall on line starts. A CSV page after the first re-reads line 1 (one small Range
GET more), so that the cursor need not hold the columns.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from typing import Any, Literal

from botocore.exceptions import ClientError

from jobs.adapters.listing import S3Client, error_code, s3_errors
from jobs.adapters.rawlines import RawLine, split_lines
from jobs.adapters.storage import split_s3_uri
from jobs.errors import InvalidInput

Kind = Literal["jsonl", "csv"]
MAX_LINE_BYTES = 64 * 1024
_CHUNK = 64 * 1024
_FIELDS: dict[str, tuple[type, str]] = {
    "uri": (str, "a string"),
    "custom_id": (str, "a string"),
    "prompt": (str, "a string"),
    "options": (dict, "a JSON object"),
}
_CSV_COLUMNS = ("uri", "custom_id", "prompt")


@dataclass(frozen=True)
class ManifestEntry:
    line: int  # 1-based, kept on every entry
    offset: int  # of the line's first byte: with ``line``, the entry's stable identity across resumes
    uri: str = ""
    custom_id: str | None = None
    prompt: str | None = None
    options: dict[str, Any] | None = None
    error: str | None = None  # set: a bad line, the fields above empty


@dataclass(frozen=True)
class ManifestPage:
    entries: list[ManifestEntry]
    next_offset: int | None  # where the next page starts; None: the object is done
    next_line: int  # the number of the line at next_offset
    etag: str = ""  # the object's ETag, without quotes


class _BadLine(ValueError):
    pass


def manifest_kind(uri: str) -> Kind:
    name = uri.lower()
    if name.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".gz", ".zst", ".bz2", ".xz", ".zip")):
        raise InvalidInput(f"a manifest cannot be compressed (it is read in ranges): {uri}")
    raise InvalidInput(f"a manifest is a .jsonl, .ndjson or .csv object: {uri}")


def manifest_page(
    client: S3Client,
    uri: str,
    offset: int,
    limit: int = 1000,
    max_line_bytes: int = MAX_LINE_BYTES,
    *,
    line: int = 1,
    etag: str | None = None,
) -> ManifestPage:
    """The page of the manifest at ``uri`` from ``offset`` (the start of line number ``line``)."""
    kind, (bucket, key) = manifest_kind(uri), split_s3_uri(uri)
    header = None
    with s3_errors(bucket, uri):
        if kind == "csv" and offset:  # line 1 again, so that the cursor need not hold the columns
            with _ranged(client, bucket, key, 0, max_line_bytes, etag) as (chunks, _, etag):
                header = parse_header(next(split_lines(chunks, 0, 1, max_line_bytes), None))
        with _ranged(client, bucket, key, offset, None, etag) as (chunks, size, etag):
            return parse_page(chunks, kind, offset, line, limit, max_line_bytes, header, size, etag)


def manifest_head(client: S3Client, uri: str, max_line_bytes: int = MAX_LINE_BYTES) -> str:
    """At submission, so that a mistake is refused then and not as a failed job later: the manifest's
    format, its bucket and object, a CSV's header row. Its ETag, to pin the version the pages read."""
    kind, (bucket, key) = manifest_kind(uri), split_s3_uri(uri)
    # A ranged GET, not a HEAD: a HEAD's 404 does not say whether the bucket or the object is missing.
    last = max_line_bytes if kind == "csv" else 0
    with s3_errors(bucket, uri), _ranged(client, bucket, key, 0, last, None) as (chunks, _, etag):
        if kind == "csv":
            parse_header(next(split_lines(chunks, 0, 1, max_line_bytes), None))
    return etag


@contextmanager
def _ranged(
    client: S3Client, bucket: str, key: str, first: int, last: int | None, etag: str | None
) -> Iterator[tuple[Iterable[bytes], int | None, str]]:
    """A Range GET's bytes in chunks, the object's size and its ETag (If-Match ``etag`` where given); no
    bytes where the range starts at or past the object's end (S3 answers 416). Bytes left unread when the
    page is full are dropped with the connection."""
    args = {"Bucket": bucket, "Key": key, "Range": f"bytes={first}-{'' if last is None else last}"}
    try:
        obj = client.get_object(**args, **({"IfMatch": f'"{etag}"'} if etag else {}))
    except ClientError as e:
        if error_code(e) != "InvalidRange":
            raise
        obj = None
    if obj is None:
        yield [], None, etag or ""
        return
    try:
        yield obj["Body"].iter_chunks(_CHUNK), first + int(obj["ContentLength"]), obj["ETag"].strip('"')
    finally:
        obj["Body"].close()


def parse_page(
    chunks: Iterable[bytes],
    kind: Kind,
    offset: int = 0,
    line: int = 1,
    limit: int = 1000,
    max_line_bytes: int = MAX_LINE_BYTES,
    header: tuple[str, ...] | None = None,
    size: int | None = None,
    etag: str = "",
) -> ManifestPage:
    """A page from the object's bytes at ``offset`` onwards (to its end, or as far as wanted): at most
    ``limit`` lines after a CSV header, which is read here at offset 0 and must be given after it.
    ``size``, the object's, ends the listing on a page that ends at the object's end."""
    if limit < 1 or offset < 0 or line < 1:
        raise ValueError(f"limit and line must be at least 1, offset at least 0: {limit}, {line}, {offset}")
    lines = split_lines(chunks, offset, line, max_line_bytes)
    if kind == "csv" and offset == 0:
        header = parse_header(next(lines, None))
    read = list(islice(lines, limit))
    if read and kind == "csv" and header is None:
        raise ValueError("a CSV page after the first needs the header")
    offset, line = (read[-1].end, read[-1].number + 1) if read else (offset, line)
    entries = [e for raw in read if (e := parse_line(raw, header)) is not None]
    done = len(read) < limit or offset == size
    return ManifestPage(entries, None if done else offset, line, etag)


def parse_header(raw: RawLine | None) -> tuple[str, ...]:
    """The columns a CSV manifest's line 1 names (stripped, lower case)."""
    try:
        text = _text(raw) if raw is not None else ""
        columns = tuple(c.strip().lower() for c in _csv_row(text)) if text.strip() else ()
    except _BadLine as e:
        raise InvalidInput(f"a CSV manifest's header row (line 1) is unreadable: {e}") from e
    unknown = sorted(set(columns) - set(_CSV_COLUMNS))
    if "uri" not in columns or unknown or len(set(columns)) < len(columns):
        raise InvalidInput(
            f"a CSV manifest's line 1 must name its columns, each once: uri, and optionally custom_id and"
            f" prompt; it names {', '.join(columns) or 'none'}"
        )
    return columns


def parse_line(raw: RawLine, header: tuple[str, ...] | None) -> ManifestEntry | None:
    """One line as an entry: a JSON object, or with a ``header`` a CSV row; None for a blank line."""
    try:
        text = _text(raw)
        if not text.strip():
            return None
        fields = _json_fields(text) if header is None else _csv_fields(text, header)
        return ManifestEntry(raw.number, raw.start, **_checked(fields))
    except _BadLine as e:
        return ManifestEntry(raw.number, raw.start, error=f"line {raw.number} (byte {raw.start}): {e}")


def _text(raw: RawLine) -> str:
    if raw.data is None:
        raise _BadLine(f"{raw.end - raw.start} bytes long, over the limit on a line")
    try:  # only the object's first bytes may hold a byte order mark
        return raw.data.decode("utf-8-sig" if raw.start == 0 else "utf-8").rstrip("\r\n")
    except UnicodeDecodeError as e:
        raise _BadLine(f"not UTF-8 ({e.reason} at byte {e.start} of the line)") from e


def _json_fields(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as e:  # ValueError: bad JSON, or an integer of over 4300 digits
        raise _BadLine(f"not JSON: {e}") from e
    if not isinstance(value, dict):
        raise _BadLine(f"a JSON {type(value).__name__}, not an object")
    return value


def _csv_fields(text: str, header: tuple[str, ...]) -> dict[str, Any]:
    row = _csv_row(text)
    if len(row) != len(header):
        raise _BadLine(f"{len(row)} fields where the header names {len(header)}")
    return {column: cell for column, cell in zip(header, row, strict=True) if cell != ""}


def _csv_row(text: str) -> list[str]:
    try:
        return next(csv.reader([text], strict=True))
    except csv.Error as e:  # an unclosed quote (a line break inside quotes), a field over csv's size limit
        raise _BadLine(f"bad CSV: {e}") from e


def _checked(fields: dict[str, Any]) -> dict[str, Any]:
    """The fields of an entry, their names and types checked: a typo such as "promt" is an error, not an
    item silently run without its prompt."""
    unknown = sorted(set(fields) - set(_FIELDS))
    if unknown:
        raise _BadLine(f"unknown field(s) {', '.join(unknown)}; the fields are {', '.join(_FIELDS)}")
    for name, (kind, described) in _FIELDS.items():
        if fields.get(name) is not None and not isinstance(fields[name], kind):
            raise _BadLine(f"{name} must be {described}")
    if not fields.get("uri"):
        raise _BadLine("uri is missing or empty")
    return {name: value for name, value in fields.items() if value is not None}
