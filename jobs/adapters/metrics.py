"""Prometheus counters fed by the use cases, where a compare-and-set is won, so a redelivered message
never counts twice. Any process may feed them: the API serves its own registry at /metrics, a worker
serves every one of its processes' samples through prometheus_client's multiprocess mode (see
workers.metrics). Rates (pages/s, tokens/s) come from PromQL ``rate()`` over these counters.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import Counter, Histogram

PAGES = Counter("vlmq_pages", "Pages (units) that got a stored result")
OUTPUT_TOKENS = Counter("vlmq_output_tokens", "Tokens generated for stored results (reasoning and answer)")
PROMPT_TOKENS = Counter("vlmq_prompt_tokens", "Prompt tokens (text and vision) of stored results")
FAILURES = Counter(
    "vlmq_item_failures", "Items (sources or pages) that failed (not expired ones), by error code", ["reason"]
)
ENGINE_BUSY_SECONDS = Counter(
    "vlmq_engine_busy_seconds", "Wall time with at least one request in the engine; rate() = busy fraction"
)
PREEMPTIONS = Counter(
    "vlmq_engine_preemptions", "Running engine requests aborted and sent again to make room for urgent work"
)

QUEUE_WAIT = Histogram(
    "vlmq_queue_wait_seconds",
    "Time an item waited for its claim (stage prep: a source; gpu: a page), by tenant and job size class",
    ["stage", "tenant", "size"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600),
)


def waited(stage: str, waits: Iterable[tuple[str, str, float]]) -> None:
    """Queue waits of claimed items: (tenant, size class, seconds) each (jobs.scheduling.fairness.Wait)."""
    for tenant, size, seconds in waits:
        QUEUE_WAIT.labels(stage=stage, tenant=tenant, size=size).observe(seconds)


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0


def page_stored(result: Mapping[str, object]) -> None:
    PAGES.inc()
    OUTPUT_TOKENS.inc(_int(result.get("completion_tokens")))
    PROMPT_TOKENS.inc(_int(result.get("prompt_tokens")))


def items_failed(reason: str, n: int) -> None:
    if n:
        FAILURES.labels(reason=reason).inc(n)
