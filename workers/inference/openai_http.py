"""The "openai" engine's HTTP side: its servers, which one takes the next request, and retries.

Several base URLs are balanced by their requests in flight (the least busy takes the next one), so a
slower server gets fewer. A failure a retry may fix (429, any 5xx, a timeout, a refused or dropped
connection) is tried again after a random wait below ``backoff_base_s * 2^try`` (full jitter, at most
``backoff_max_s``; a 429's Retry-After is honoured up to that cap), on another server when one is up:
a server that failed is set aside for that wait. When the tries are spent the server counts as down,
and ``TransportError`` gives the batch's pages back to wait (the worker's way for infrastructure that
is unreachable: jobs.errors), so an outage fails nothing at once. Other answers (400, 401, 404) are
the request's or the configuration's fault: ``EngineError`` at once.

Metrics per server (label ``endpoint``: scheme, host and port, never a key): request latency, errors
by kind, requests in flight.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from prometheus_client import Counter, Gauge, Histogram

from jobs.errors import EngineError, TransportError

LATENCY = Histogram(
    "vlmq_openai_request_seconds",
    "Chat completions requests to an OpenAI-compatible server, by endpoint (answered ones)",
    ["endpoint"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600),
)
ERRORS = Counter(
    "vlmq_openai_errors",
    "Failed chat completions requests, by endpoint and kind (http_429, http_5xx, http_4xx, timeout, "
    "connect, dropped, bad_reply)",
    ["endpoint", "kind"],
)
IN_FLIGHT = Gauge(
    "vlmq_openai_in_flight", "Requests in flight to an endpoint", ["endpoint"], multiprocess_mode="livesum"
)
RETRIED_STATUS = frozenset({408, 409, 425, 429})  # and every 5xx


def endpoint_label(url: str) -> str:
    """scheme://host:port of a base URL: user info, path and query (where keys may hide) left out."""
    u = urlsplit(url)
    host = u.hostname or ""
    return f"{u.scheme}://{host}:{u.port}" if u.port else f"{u.scheme}://{host}"


@dataclass
class Endpoint:
    url: str  # the API root, ending in /v1
    label: str
    in_flight: int = 0
    failures: int = 0  # in a row: how long it rests after the next one
    resting_until: float = 0.0  # set aside after a failure until then (monotonic)


class Endpoints:
    """The servers, and which one takes the next request: the least in flight of those not resting;
    when all rest, the one that is back soonest."""

    def __init__(self, urls: list[str], clock: Callable[[], float] = time.monotonic) -> None:
        if not urls:
            raise ValueError("the openai engine needs at least one base URL (VLMQ_MODEL__OPENAI__BASE_URLS)")
        self.all = [Endpoint(u.rstrip("/"), endpoint_label(u)) for u in urls]
        self._clock = clock
        self._turn = 0  # ties go round the list, so idle servers share the first requests

    def pick(self) -> Endpoint:
        now = self._clock()
        up = [e for e in self.all if e.resting_until <= now]
        if not up:
            return min(self.all, key=lambda e: e.resting_until)
        self._turn += 1
        n = len(self.all)
        return min(up, key=lambda e: (e.in_flight, (self.all.index(e) - self._turn) % n))

    def failed(self, e: Endpoint, policy: RetryPolicy, retry_after: float | None = None) -> None:
        """Set ``e`` aside: for its Retry-After, else twice as long at each failure in a row (always
        longer than a retry's wait, so the retry goes to another server when one is up)."""
        e.failures += 1
        seconds = policy.delay(0, retry_after) if retry_after is not None else policy.ceiling(e.failures)
        e.resting_until = max(e.resting_until, self._clock() + seconds)

    def answered(self, e: Endpoint) -> None:
        e.failures, e.resting_until = 0, 0.0


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 6
    base_s: float = 0.5
    max_s: float = 30.0

    def ceiling(self, attempt: int) -> float:
        return min(self.max_s, self.base_s * 2 ** min(attempt, 30))

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Full jitter below base * 2^attempt, capped; a server's Retry-After (capped too) wins."""
        if retry_after is not None:
            return min(self.max_s, max(0.0, retry_after))
        return random.uniform(0, self.ceiling(attempt))


class Retryable(Exception):
    def __init__(self, kind: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind, self.retry_after = kind, retry_after


def _retry_after(r: httpx.Response) -> float | None:
    try:
        return float(r.headers["retry-after"])
    except (KeyError, ValueError):
        return None  # absent, or an HTTP date: our own backoff then


def _check(e: Endpoint, r: httpx.Response) -> Any:
    """The reply's JSON, or the failure: Retryable, or EngineError for what a retry cannot fix."""
    if r.status_code == 429 or r.status_code >= 500 or r.status_code in RETRIED_STATUS:
        kind = "http_429" if r.status_code == 429 else "http_5xx" if r.status_code >= 500 else "http_4xx"
        raise Retryable(kind, f"{e.label} answered {r.status_code}: {r.text[:300]}", _retry_after(r))
    if r.status_code >= 400:
        ERRORS.labels(endpoint=e.label, kind="http_4xx").inc()
        raise EngineError(f"{e.label} refused the request ({r.status_code}): {r.text[:500]}")
    try:
        return r.json()
    except ValueError as err:
        raise Retryable("bad_reply", f"{e.label} answered 200 with no JSON: {r.text[:200]}") from err


async def _send(
    client: httpx.AsyncClient, e: Endpoint, body: Mapping[str, Any], headers: Mapping[str, str]
) -> Any:
    e.in_flight += 1
    IN_FLIGHT.labels(endpoint=e.label).inc()
    t0 = time.monotonic()
    try:
        r = await client.post(f"{e.url}/chat/completions", json=body, headers=dict(headers))
    except httpx.TimeoutException as err:
        raise Retryable("timeout", f"{e.label} timed out: {type(err).__name__}") from err
    except httpx.ConnectError as err:
        raise Retryable("connect", f"{e.label} unreachable: {err}") from err
    except httpx.TransportError as err:  # the connection dropped mid-request (RemoteProtocolError, ReadError)
        raise Retryable("dropped", f"{e.label} dropped the connection: {type(err).__name__} {err}") from err
    finally:
        e.in_flight -= 1
        IN_FLIGHT.labels(endpoint=e.label).dec()
    LATENCY.labels(endpoint=e.label).observe(time.monotonic() - t0)
    return _check(e, r)


async def post_chat(
    client: httpx.AsyncClient, endpoints: Endpoints, body: Mapping[str, Any], headers: Mapping[str, str],
    policy: RetryPolicy, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> Any:  # fmt: skip
    """POST one chat completion, retried as the module says; its JSON reply."""
    last = ""
    for attempt in range(policy.max_retries + 1):
        e = endpoints.pick()
        try:
            reply = await _send(client, e, body, headers)
        except Retryable as err:
            ERRORS.labels(endpoint=e.label, kind=err.kind).inc()
            endpoints.failed(e, policy, err.retry_after)
            last = str(err)
            if attempt == policy.max_retries:
                break
            await sleep(policy.delay(attempt, err.retry_after))
            continue
        endpoints.answered(e)
        return reply
    raise TransportError(f"OpenAI-compatible server unavailable after {policy.max_retries + 1} tries: {last}")
