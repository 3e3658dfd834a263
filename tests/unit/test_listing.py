"""Sources enumerated page by page: the glob's semantics and its list prefix, S3 listing pages and manifest
pages. S3 is a fake in memory (ListObjectsV2 and ranged GetObject as S3 answers them); the real server's
turn is tests/integration/test_listing_s3.py."""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from jobs.adapters.listing import list_page, parse_pattern
from jobs.adapters.manifests import (
    ManifestEntry,
    manifest_head,
    manifest_kind,
    manifest_page,
    parse_header,
    parse_page,
)
from jobs.adapters.rawlines import split_lines
from jobs.errors import InvalidInput, StorageUnavailable

GLOBS = [
    ("a/**/*.pdf", ["a/x.pdf", "a/b/x.pdf", "a/b/c/x.pdf", "a/.pdf"], ["ax.pdf", "b/a/x.pdf", "a/x.pdf.txt"]),
    ("a/**/*.pdf", [], ["a/x.PDF", "a/b/x_pdf", "a/xpdf"]),  # case matters, the dot is a dot
    ("**/*.pdf", ["x.pdf", "a/b/c/x.pdf"], ["a/b/x.txt", "a/x.pdf/y"]),
    ("a/**", ["a/x", "a/b/c/d"], ["a", "b/x", "ab/x"]),
    ("**", ["x", "a/b/c", "a b/ü"], []),
    (
        "a/**/b/**/c.txt",
        ["a/b/c.txt", "a/x/b/y/z/c.txt", "a/b/b/c.txt", "a/b/x/c.txt"],
        ["a/c.txt", "a/xb/c.txt"],
    ),
    ("a/**/**/b", ["a/b", "a/x/y/b"], ["a/xb"]),
    ("a/*/c", ["a/b/c", "a//c"], ["a/b/d/c", "a/c"]),
    ("a/*", ["a/b", "a/b c"], ["a/b/c", "a"]),
    ("a/x?.pdf", ["a/x1.pdf", "a/xé.pdf"], ["a/x.pdf", "a/x12.pdf", "a/x/.pdf"]),
    ("a/[ab].pdf", ["a/a.pdf", "a/b.pdf"], ["a/c.pdf", "a/ab.pdf"]),
    ("a/[!ab].pdf", ["a/c.pdf", "a/..pdf"], ["a/a.pdf", "a/b.pdf"]),
    ("a[!x]b", ["a-b"], ["a/b", "axb"]),  # a negated class never matches "/"
    ("a[+-0]b", ["a.b", "a+b", "a0b"], ["a/b"]),  # nor does a range that spans it
    ("a/[a-c]*.pdf", ["a/b1.pdf", "a/c.pdf"], ["a/d.pdf", "a/B.pdf"]),
    ("a/[z-a]", [], ["a/z", "a/a", "a/-"]),  # a reversed range is empty
    ("a/[]]x", ["a/]x"], ["a/x"]),
    ("a/[[]x", ["a/[x"], ["a/x"]),
    ("a/[*]", ["a/*"], ["a/x"]),
    ("a/[x", ["a/[x"], ["a/x"]),  # an unclosed bracket is itself
    ("a/(x)+$^{1}|*.pdf", ["a/(x)+$^{1}|.pdf", "a/(x)+$^{1}|z.pdf"], ["a/xx.pdf"]),  # regex syntax is literal
    ("a.b/*", ["a.b/c"], ["aXb/c"]),
    ("a**b", ["ab", "axxb"], ["ax/xb"]),  # ** inside a segment is a *
    ("données/**/*.pdf", ["données/été/ß.pdf", "données/x.pdf"], ["donnees/x.pdf"]),
    ("中/?.pdf", ["中/文.pdf"], ["中/文字.pdf"]),
    ("my docs/*.pdf", ["my docs/a b.pdf"], ["my docs/sub dir/a.pdf", "mydocs/a.pdf"]),
    ("a/*", ["a/x\ny", "a/\\"], []),  # S3 keys may hold line breaks and backslashes
    ("pdfs", ["pdfs/x", "pdfs/a/b.pdf"], ["pdfs", "pdfs-old/x", "pdfsx"]),  # a plain prefix is a folder
    ("pdfs/", ["pdfs/x", "pdfs/a/b.pdf"], ["pdfs-old/x"]),
    ("x/*/", ["x/a/b", "x/a/b/c"], ["x/a", "y/a/b"]),  # a trailing slash: everything under
    ("", ["a", "a/b/c"], []),
]


@pytest.mark.parametrize(("glob", "matching", "other"), GLOBS)
def test_glob_semantics(glob: str, matching: list[str], other: list[str]) -> None:
    pattern = parse_pattern(f"s3://bkt/{glob}")
    assert pattern.bucket == "bkt"
    assert [k for k in matching if not pattern.matches(k)] == []
    assert [k for k in other if pattern.matches(k)] == []
    assert all(k.startswith(pattern.list_prefix) for k in matching)


def _reference(pattern: list[str], key: list[str]) -> bool:
    """The semantics spelled out slowly: fnmatch within a segment (no "/" there to cross); ``**`` takes zero
    or more segments, or at the end one or more (``a/**`` is what lies under ``a/``, not ``a``)."""
    if not pattern:
        return not key
    if pattern[0] == "**":
        first = 1 if len(pattern) == 1 else 0
        return any(_reference(pattern[1:], key[i:]) for i in range(first, len(key) + 1))
    return bool(key) and fnmatchcase(key[0], pattern[0]) and _reference(pattern[1:], key[1:])


def test_the_regex_agrees_with_a_slow_reference() -> None:
    rng = random.Random(25)
    tokens = ["a", "b", "*", "?", "**", "[ab]", "[!a]", "/", "/", "/**/"]
    for _ in range(3000):
        glob = "".join(rng.choices(tokens, k=rng.randint(1, 6))).strip("/").replace("//", "/")
        if not any(c in glob for c in "*?["):
            continue  # a plain prefix: a folder, which the reference does not know
        key = "".join(rng.choices("ab/", k=rng.randint(1, 7)))
        expected = _reference(glob.split("/"), key.split("/"))
        assert parse_pattern(f"s3://b/{glob}").matches(key) == expected, (glob, key)


@pytest.mark.parametrize(
    "glob",
    ["*a" * 300 + "b", "**/a/" * 150 + "b", "a*" * 400, "*/" * 300 + "x"],
)
def test_hostile_patterns_fail_fast(glob: str) -> None:
    pattern = parse_pattern(f"s3://b/{glob}")
    started = time.monotonic()
    assert not pattern.matches("a" * 1000 + "/" + "a/" * 10)
    assert time.monotonic() - started < 0.5  # backtracking would take years


@pytest.mark.parametrize(
    ("uri", "prefix"),
    [
        ("s3://b/a/**/*.pdf", "a/"),
        ("s3://b/pdfs/2024-*/x.pdf", "pdfs/2024-"),
        ("s3://b/pdfs/x?.pdf", "pdfs/x"),
        ("s3://b/pdfs/[ab]/x", "pdfs/"),
        ("s3://b/pdfs", "pdfs/"),
        ("s3://b/pdfs/", "pdfs/"),
        ("s3://b/pdfs/x.pdf", "pdfs/x.pdf/"),  # no wildcard: a folder, even with an extension
        ("s3://b/**/*.pdf", ""),
        ("s3://b/", ""),
        ("s3://b", ""),
    ],
)
def test_list_prefix_is_the_literal_start(uri: str, prefix: str) -> None:
    assert parse_pattern(uri).list_prefix == prefix


@pytest.mark.parametrize(
    ("uri", "needle"),
    [
        ("https://host/a/*.pdf", "must be an s3:// URI"),
        ("corpus/*.pdf", "must be an s3:// URI"),
        ("s3://", "needs a bucket name"),
        ("s3:///a/*.pdf", "needs a bucket name"),
        ("s3://b*/a.pdf", "without wildcards"),
        ("s3://b/a/../secret/*", "'.' and '..' segments"),
        ("s3://b/./a/*", "'.' and '..' segments"),
        ("s3://b/a/..", "'.' and '..' segments"),
        ("s3://b/" + "x" * 1100, "at most 1024 characters"),
    ],
)
def test_bad_patterns_are_refused(uri: str, needle: str) -> None:
    with pytest.raises(InvalidInput, match=needle):
        parse_pattern(uri)


def test_dots_inside_a_segment_are_fine() -> None:
    assert parse_pattern("s3://b/a..b/.hidden/*").matches("a..b/.hidden/x")


class Body:
    def __init__(self, data: bytes) -> None:
        self.data, self.closed = data, False

    def read(self) -> bytes:
        return self.data

    def iter_chunks(self, size: int) -> Iterator[bytes]:
        for i in range(0, len(self.data), size):
            yield self.data[i : i + size]

    def close(self) -> None:
        self.closed = True


def _client_error(code: str, op: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}}, op)


class FakeS3:
    """ListObjectsV2 and ranged GetObject over objects in memory, as S3 answers them; ``fail``: raised."""

    def __init__(self, bucket: str, objects: dict[str, bytes]) -> None:
        self.bucket, self.objects = bucket, objects
        self.fail: Exception | None = None
        self.bodies: list[Body] = []

    def _check(self, bucket: str, op: str) -> None:
        if self.fail is not None:
            raise self.fail
        if bucket != self.bucket:
            raise _client_error("NoSuchBucket", op)

    def list_objects_v2(self, Bucket: str, Prefix: str, MaxKeys: int, StartAfter: str = "") -> dict[str, Any]:
        self._check(Bucket, "ListObjectsV2")
        keys = sorted(k for k in self.objects if k.startswith(Prefix) and k > StartAfter)
        contents = [self._summary(k) for k in keys[:MaxKeys]]
        return (
            {"Contents": contents, "IsTruncated": len(keys) > MaxKeys} if contents else {"IsTruncated": False}
        )

    def _summary(self, key: str) -> dict[str, Any]:
        etag = f'"{hashlib.md5(self.objects[key]).hexdigest()}"'
        return {"Key": key, "ETag": etag, "Size": len(self.objects[key]), "LastModified": datetime.now(UTC)}

    def get_object(self, Bucket: str, Key: str, Range: str, IfMatch: str = "") -> dict[str, Any]:
        self._check(Bucket, "GetObject")
        if Key not in self.objects:
            raise _client_error("NoSuchKey", "GetObject")
        data, etag = self.objects[Key], self._summary(Key)["ETag"]
        if IfMatch and IfMatch != etag:
            raise _client_error("PreconditionFailed", "GetObject")
        first, _, last = Range.removeprefix("bytes=").partition("-")
        if int(first) >= len(data):
            raise _client_error("InvalidRange", "GetObject")
        self.bodies.append(Body(data[int(first) : int(last) + 1 if last else None]))
        return {"Body": self.bodies[-1], "ContentLength": len(self.bodies[-1].data), "ETag": etag}


def _all_pages(s3: FakeS3, uri: str, limit: int) -> list[list[str]]:
    pattern, cursor, pages = parse_pattern(uri), None, []
    while True:
        page = list_page(s3, pattern, cursor, limit)
        pages.append([e.uri.removeprefix("s3://bkt/") for e in page.entries])
        if (cursor := page.cursor) is None:
            return pages


def test_pages_skip_folder_markers_and_other_keys_and_resume_after_the_last_key_seen() -> None:
    keys = ["a/1.pdf", "a/2.txt", "a/3.txt", "a/4.txt", "a/b/", "a/b/5.pdf", "a/c.pdf/", "a/z.pdf", "b/6.pdf"]
    s3 = FakeS3("bkt", dict.fromkeys(keys, b"x"))
    pages = _all_pages(s3, "s3://bkt/a/**/*.pdf", limit=2)
    assert pages == [["a/1.pdf"], [], ["a/b/5.pdf"], ["a/z.pdf"]]  # a page may hold nothing
    assert _all_pages(s3, "s3://bkt/a", limit=1000) == [
        [k for k in keys if k.startswith("a/") and k[-1] != "/"]
    ]


def test_an_entry_names_its_object() -> None:
    s3 = FakeS3("bkt", {"a/x y.pdf": b"hello"})
    (entry,) = list_page(s3, parse_pattern("s3://bkt/a/*.pdf"), None).entries
    assert (entry.uri, entry.size) == ("s3://bkt/a/x y.pdf", 5)
    assert entry.etag == hashlib.md5(b"hello").hexdigest()  # without S3's quotes
    assert isinstance(entry.last_modified, datetime)


@pytest.mark.parametrize(
    ("fail", "error", "needle"),
    [
        (None, InvalidInput, "bucket 'elsewhere' does not exist"),
        (
            _client_error("AccessDenied", "ListObjectsV2"),
            InvalidInput,
            "access to bucket 'elsewhere' is denied",
        ),
        (_client_error("SlowDown", "ListObjectsV2"), StorageUnavailable, "S3 error SlowDown"),
        (EndpointConnectionError(endpoint_url="http://s3"), StorageUnavailable, "S3 unreachable"),
    ],
)
def test_listing_errors(fail: Exception | None, error: type[Exception], needle: str) -> None:
    s3 = FakeS3("bkt", {})
    s3.fail = fail
    with pytest.raises(error, match=needle):
        list_page(s3, parse_pattern("s3://elsewhere/a/*"), None)


def test_a_truncated_listing_without_keys_is_not_taken_for_the_end() -> None:
    class Odd(FakeS3):
        def list_objects_v2(self, **kw: Any) -> dict[str, Any]:
            return {"IsTruncated": True}

    with pytest.raises(StorageUnavailable, match="truncated listing without keys"):
        list_page(Odd("bkt", {}), parse_pattern("s3://bkt/a/*"), None)


@pytest.mark.parametrize("limit", [0, 1001])
def test_the_limit_is_what_s3_takes(limit: int) -> None:
    with pytest.raises(ValueError, match=r"limit must be 1\.\.1000"):
        list_page(FakeS3("bkt", {}), parse_pattern("s3://bkt/a/*"), None, limit)


JSONL = b"\n".join(
    [
        b'\xef\xbb\xbf{"uri": "s3://in/1.pdf", "custom_id": "one", "prompt": "Read it",'
        b' "options": {"pages": "1-2"}}',
        b"",
        b'{"uri": "s3://in/2.pdf", "custom_id": null}\r',
        b"   ",
        b'{"uri": "s3://in/3.pdf", ',
        b'["s3://in/4.pdf"]',
        b'{"custom_id": "five"}',
        b'{"uri": ""}',
        b'{"uri": "s3://in/7.pdf", "prompt": 7}',
        b'{"uri": "s3://in/8.pdf", "options": "fast"}',
        b'{"uri": "s3://in/9.pdf", "promt": "typo"}',
        b'{"uri": "s3://in/\xff.pdf"}',
        b'{"uri": "s3://in/11.pdf", "custom_id": 11}',
        b'{"uri": "s3://in/12.pdf"}',  # the last line has no line break
    ]
)
JSONL_ERRORS = {
    5: "not JSON",
    6: "a JSON list, not an object",
    7: "uri is missing or empty",
    8: "uri is missing or empty",
    9: "prompt must be a string",
    10: "options must be a JSON object",
    11: "unknown field(s) promt",
    12: "not UTF-8",
    13: "custom_id must be a string",
}


def _error_lines(entries: list[ManifestEntry]) -> dict[int, str]:
    return {e.line: e.error for e in entries if e.error}


def test_jsonl_lines_become_entries_and_bad_lines_errors() -> None:
    page = parse_page([JSONL], "jsonl")
    assert page.next_offset is None
    assert [e.line for e in page.entries] == [1, 3, *range(5, 15)]  # blank lines skipped
    first, second = page.entries[0], page.entries[1]
    assert (first.uri, first.custom_id, first.prompt, first.options) == (
        "s3://in/1.pdf",
        "one",
        "Read it",
        {"pages": "1-2"},
    )
    assert (second.uri, second.custom_id, second.offset) == (
        "s3://in/2.pdf",
        None,
        JSONL.index(b'{"uri": "s3://in/2'),
    )
    assert page.entries[-1].uri == "s3://in/12.pdf"
    errors = _error_lines(page.entries)
    assert errors.keys() == JSONL_ERRORS.keys()
    for line, needle in JSONL_ERRORS.items():
        assert needle in errors[line] and errors[line].startswith(f"line {line} (byte "), errors[line]


def test_a_line_over_the_limit_is_an_error_and_the_next_line_reads() -> None:
    data = b'{"uri": "s3://in/1.pdf"}\n{"uri": "' + b"x" * 5000 + b'"}\n{"uri": "s3://in/3.pdf"}\n'
    for size in (7, 100, 10_000):
        chunks = [data[i : i + size] for i in range(0, len(data), size)]
        page = parse_page(chunks, "jsonl", max_line_bytes=1000)
        assert [e.uri for e in page.entries] == ["s3://in/1.pdf", "", "s3://in/3.pdf"]
        assert "5012 bytes long, over the limit" in str(page.entries[1].error)


def test_a_too_long_line_is_never_held() -> None:
    lines = split_lines((b"x" * 1000 for _ in range(1000)), 0, 1, 4096)  # one line of a million bytes
    (raw,) = lines
    assert (raw.number, raw.start, raw.end, raw.data) == (1, 0, 1_000_000, None)


@pytest.mark.parametrize("size", [1, 3, 7, 64, 1 << 16])
def test_chunks_cut_anywhere_give_the_same_lines(size: int) -> None:
    chunks = [JSONL[i : i + size] for i in range(0, len(JSONL), size)]
    assert parse_page(chunks, "jsonl") == parse_page([JSONL], "jsonl")


def _pages(data: bytes, kind: Any, limit: int) -> Iterator[Any]:
    """Every page, as a caller resumes them: the bytes from the stored offset (as a Range GET gives)."""
    offset: int | None = 0
    line, header = 1, parse_header(next(split_lines([data], 0, 1, 1 << 16))) if kind == "csv" else None
    while offset is not None:
        page = parse_page([data[offset:]], kind, offset, line, limit, header=header, size=len(data))
        yield page
        offset, line = page.next_offset, page.next_line


def test_pages_from_stored_offsets_give_every_line_once() -> None:
    lines = [json.dumps({"uri": f"s3://in/{i}.pdf"}) for i in range(1, 11)]
    data = "\n".join([*lines[:5], "", *lines[5:]]).encode() + b"\n"
    pages = list(_pages(data, "jsonl", limit=4))
    assert [[e.line for e in p.entries] for p in pages] == [[1, 2, 3, 4], [5, 7, 8], [9, 10, 11]]
    assert [e.uri for p in pages for e in p.entries] == [f"s3://in/{i}.pdf" for i in range(1, 11)]
    assert pages[-1].next_offset is None  # it ends at the object's size: no empty page after it
    assert [e.offset for p in pages for e in p.entries] == [data.index(line.encode()) for line in lines]


CSV = (
    "\ufeffURI , Prompt,custom_id\r\n"
    's3://in/1.pdf,"Say ""hi"", then stop",one\r\n'
    "s3://in/2.pdf,,\r\n"
    "\r\n"
    "s3://in/3.pdf,only two\r\n"
    's3://in/4.pdf,"open quote,x\r\n'
    ",no uri,six\r\n"
    "s3://in/é.pdf,,seven"
).encode()


def test_csv_rows_become_entries() -> None:
    page = parse_page([CSV], "csv")
    assert [(e.line, e.uri, e.prompt, e.custom_id) for e in page.entries if not e.error] == [
        (2, "s3://in/1.pdf", 'Say "hi", then stop', "one"),
        (3, "s3://in/2.pdf", None, None),  # an empty cell is an absent value
        (8, "s3://in/é.pdf", None, "seven"),
    ]
    errors = _error_lines(page.entries)
    assert "2 fields where the header names 3" in errors[5]
    assert "bad CSV" in errors[6]
    assert "uri is missing or empty" in errors[7]


def test_csv_pages_after_the_first_take_the_header() -> None:
    pages = list(_pages(CSV, "csv", limit=2))
    assert [[e.line for e in p.entries] for p in pages] == [[2, 3], [5], [6, 7], [8]]
    with pytest.raises(ValueError, match="needs the header"):
        parse_page([CSV[10:]], "csv", offset=10)


@pytest.mark.parametrize(
    "data",
    [b"", b"\n", b"prompt,custom_id\n", b"uri,uri\n", b"uri,size\n", b'"uri\n', b"\xffuri\n"],
)
def test_a_bad_csv_header_refuses_the_manifest(data: bytes) -> None:
    with pytest.raises(InvalidInput, match="CSV manifest"):
        parse_page([data + b"s3://in/1.pdf\n"], "csv")


@pytest.mark.parametrize(
    ("uri", "kind"),
    [("s3://b/list.jsonl", "jsonl"), ("s3://b/LIST.NDJSON", "jsonl"), ("s3://b/list.csv", "csv")],
)
def test_the_format_is_the_extension(uri: str, kind: str) -> None:
    assert manifest_kind(uri) == kind


@pytest.mark.parametrize(
    ("uri", "needle"), [("s3://b/list.jsonl.gz", "cannot be compressed"), ("s3://b/list.txt", "is a .jsonl")]
)
def test_other_formats_are_refused(uri: str, needle: str) -> None:
    with pytest.raises(InvalidInput, match=needle):
        manifest_kind(uri)


def test_manifest_pages_from_s3_with_a_csv_header_read_again() -> None:
    s3 = FakeS3("bkt", {"m.csv": CSV})
    first = manifest_page(s3, "s3://bkt/m.csv", 0, limit=3)
    second = manifest_page(
        s3, "s3://bkt/m.csv", first.next_offset or 0, limit=10, line=first.next_line, etag=first.etag
    )
    assert [e.line for e in first.entries] == [2, 3]
    assert [e.line for e in second.entries] == [5, 6, 7, 8]
    assert second.next_offset is None
    assert first.etag == hashlib.md5(CSV).hexdigest()
    assert all(b.closed for b in s3.bodies)


def test_a_manifest_changed_between_pages_is_refused() -> None:
    s3 = FakeS3("bkt", {"m.jsonl": JSONL})
    first = manifest_page(s3, "s3://bkt/m.jsonl", 0, limit=2)
    s3.objects["m.jsonl"] = JSONL + b"\n"
    with pytest.raises(InvalidInput, match="changed while it was being read"):
        manifest_page(s3, "s3://bkt/m.jsonl", first.next_offset or 0, line=first.next_line, etag=first.etag)


@pytest.mark.parametrize(("data", "offset"), [(b"", 0), (JSONL, len(JSONL)), (JSONL, len(JSONL) + 9)])
def test_nothing_at_the_offset_is_the_end(data: bytes, offset: int) -> None:
    page = manifest_page(FakeS3("bkt", {"m.jsonl": data}), "s3://bkt/m.jsonl", offset, line=7)
    assert (page.entries, page.next_offset, page.next_line) == ([], None, 7)


def test_an_empty_csv_has_no_header() -> None:
    with pytest.raises(InvalidInput, match="CSV manifest"):
        manifest_page(FakeS3("bkt", {"m.csv": b""}), "s3://bkt/m.csv", 0)


@pytest.mark.parametrize(
    ("uri", "needle"),
    [
        ("s3://bkt/none.jsonl", "the object does not exist"),
        ("s3://other/m.jsonl", "bucket 'other' does not exist"),
    ],
)
def test_a_missing_manifest_is_invalid_input(uri: str, needle: str) -> None:
    with pytest.raises(InvalidInput, match=needle):
        manifest_page(FakeS3("bkt", {"m.jsonl": JSONL}), uri, 0)


def test_the_head_checks_what_a_submission_can_check() -> None:
    s3 = FakeS3("bkt", {"m.jsonl": JSONL, "m.csv": CSV, "bad.csv": b"url,prompt\n", "empty.jsonl": b""})
    assert manifest_head(s3, "s3://bkt/m.jsonl") == hashlib.md5(JSONL).hexdigest()
    assert manifest_head(s3, "s3://bkt/m.csv") == hashlib.md5(CSV).hexdigest()
    assert manifest_head(s3, "s3://bkt/empty.jsonl") == ""  # it exists; S3 gives no ETag with a 416
    for uri, needle in [
        ("s3://bkt/bad.csv", "CSV manifest's line 1 must name its columns"),
        ("s3://bkt/none.jsonl", "the object does not exist"),
        ("s3://bkt/m.txt", "is a .jsonl"),
    ]:
        with pytest.raises(InvalidInput, match=needle):
            manifest_head(s3, uri)
    assert all(b.closed for b in s3.bodies)
