"""Every route's body is capped while it streams (api.limits): a chunked body (no Content-Length) is cut
off with 413 soon after its limit and never read whole; a declared size over the limit is refused before
any body is read; an upload within the limit goes to S3 without being held whole in memory.

Against the real API on a socket (uvicorn, as `vlmq api` serves it), with real Postgres, Redis and S3.
Before api.limits, /v1/files read a 768 MiB chunked body to its end (the API grew by 760 MB) and
answered 413 only then; /v1/batches had no limit at all.
"""

from __future__ import annotations

import json
import select
import socket
import subprocess
import sys
import tracemalloc
from pathlib import Path

import httpx
import pytest

from api.limits import JSON_BODY_LIMIT, MULTIPART_SLACK, SMALL_BODY_LIMIT
from jobs.config import Settings
from tests.integration import serving, with_limits

KEY = "test-key"
MIB = 1 << 20
PART = b'--BOUND\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n\r\n'
MULTIPART = "multipart/form-data; boundary=BOUND"


def _stream_chunked(port: int, path: str, content_type: str, head: bytes, total: int) -> tuple[bytes, int]:
    """Send ``head`` then filler as a chunked body until the server answers; (its answer, bytes sent)."""
    chunk = 64 << 10
    with socket.create_connection(("127.0.0.1", port)) as sock:
        request = (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        sock.sendall(request.encode())
        sent, answer = 0, b""
        while sent < total and not answer:
            data = (head + b"x" * (chunk - len(head))) if sent == 0 else b"x" * chunk
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(data), data))
            except OSError:  # the server closed the connection after answering
                break
            sent += len(data)
            if select.select([sock], [], [], 0)[0]:
                answer = sock.recv(65536)
        sock.settimeout(10)
        return answer or sock.recv(65536), sent


# (path, content type, body head, the limit in force with max_request_bytes = max_upload_bytes = 1 MiB)
ROUTES = [
    ("/v1/jobs", MULTIPART, PART, MIB),
    ("/v1/files", MULTIPART, PART, MIB + MULTIPART_SLACK),
    ("/v1/jobs", "application/json", b'{"items": [{"custom_id": "', JSON_BODY_LIMIT),
    ("/v1/batches", "application/json", b'{"input_file_id": "', SMALL_BODY_LIMIT),
]
# What the kernel's socket buffers take in before the server reads anything (loopback: about 7 MiB here).
BUFFERED = 16 * MIB


@pytest.mark.parametrize(("path", "content_type", "head", "limit"), ROUTES)
def test_a_chunked_body_is_cut_off_while_it_streams(
    settings: Settings, path: str, content_type: str, head: bytes, limit: int
) -> None:
    small = with_limits(settings, max_request_bytes=MIB, max_upload_bytes=MIB)
    with serving(small) as port:
        answer, sent = _stream_chunked(port, path, content_type, head, total=limit + 6 * BUFFERED)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b'"code":"source_too_large"' in answer, answer[:300]  # the documented error shape
    assert sent < limit + BUFFERED, f"{path}: {sent} bytes went in before the 413 ({limit} allowed)"


@pytest.mark.parametrize("path", ["/v1/files", "/v1/jobs", "/v1/batches"])
def test_a_declared_size_over_the_limit_is_refused_before_the_body(settings: Settings, path: str) -> None:
    small = with_limits(settings, max_request_bytes=MIB, max_upload_bytes=MIB)
    with serving(small) as port, socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: {MULTIPART}\r\nContent-Length: {64 << 30}\r\n\r\n".encode()
        )
        sock.settimeout(10)
        answer = sock.recv(65536)  # no body byte was sent: the answer comes from the header alone
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b"source_too_large" in answer


UPLOAD = """
import sys, httpx
with open(sys.argv[2], "rb") as f:
    r = httpx.post(sys.argv[1], files={"file": ("big.jsonl", f)}, data={"purpose": "batch"},
                   headers={"Authorization": "Bearer test-key"}, timeout=120)
print(r.status_code, r.text)
"""


def test_an_upload_within_the_limit_is_never_held_whole(settings: Settings, tmp_path: Path) -> None:
    """A 64 MiB batch file is stored from Starlette's spool file in parts: the API's Python memory peaks
    far below the file's size (it read the body whole, then copied it, before). The client runs in a
    process of its own, so this process's traced memory is the server's."""
    line = b'{"custom_id": "x", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n'
    data = line * (64 * MIB // len(line))
    path = tmp_path / "big.jsonl"
    path.write_bytes(data)
    with serving(with_limits(settings, max_upload_bytes=2 * len(data))) as port:
        base = f"http://127.0.0.1:{port}/v1/files"
        tracemalloc.start()
        try:
            done = subprocess.run(
                [sys.executable, "-c", UPLOAD, base, str(path)], capture_output=True, text=True, timeout=180
            )
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        status, _, body = done.stdout.partition(" ")
        assert status == "200", done.stdout + done.stderr
        file_id = json.loads(body)["id"]
        content = httpx.get(
            f"{base}/{file_id}/content", headers={"Authorization": f"Bearer {KEY}"}, timeout=60
        )
    assert content.content == data
    assert peak < 32 * MIB, f"the API held {peak / MIB:.0f} MiB for a {len(data) // MIB} MiB upload"
