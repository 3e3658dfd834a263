"""/metrics for Prometheus: this process's counters, and the state of the whole system read at scrape
time: queue depths (Redis list lengths of the Celery queues), items still moving and jobs, by status
(Postgres; the item count reads a small partial index). Workers serve their own counters (pages,
tokens, failures by reason, engine busy fraction): see workers.metrics.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterator

import redis
from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from api.deps import SettingsDep
from jobs.adapters.dispatch import GPU_QUEUE, PREP_QUEUE, broker_url
from jobs.config import Settings
from jobs.errors import Forbidden, Unauthorized
from jobs.service import JobService
from jobs.views import queries

router = APIRouter(tags=["health"])


def check_scrape_token(settings: Settings, authorization: str | None) -> None:
    token = settings.api.metrics_token.get_secret_value() if settings.api.metrics_token else ""
    if not token:
        raise Forbidden("/metrics is off on the API: set VLMQ_API__METRICS_TOKEN and scrape with that token")
    scheme, _, presented = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), token.encode()):
        raise Unauthorized("/metrics needs 'Authorization: Bearer <VLMQ_API__METRICS_TOKEN>'")


log = logging.getLogger(__name__)
# Kombu's Redis transport keeps a priority's messages in "<queue>\x06\x16<priority>" (0 is the bare name).
PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")


class StateCollector(Collector):
    def __init__(self, service: JobService, settings: Settings) -> None:
        self.service, self.settings = service, settings

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily(
            "vlmq_metrics_source_up", "Whether a source answered this scrape", labels=["source"]
        )
        for source, read in (("redis", self._queues), ("postgres", self._states)):
            try:
                yield from read()
                up.add_metric([source], 1)
            except Exception:  # a scrape reports a source down, it does not fail
                log.warning("metrics: %s unavailable", source, exc_info=True)
                up.add_metric([source], 0)
        yield up

    def _queues(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily("vlmq_queue_depth", "Messages waiting in a Celery queue", labels=["queue"])
        client = redis.Redis.from_url(broker_url(self.settings), socket_timeout=3, socket_connect_timeout=3)
        prefix = self.settings.redis.key_prefix
        try:
            for queue in (PREP_QUEUE, GPU_QUEUE):
                keys = [f"{prefix}{queue}{suffix}" for suffix in PRIORITY_SUFFIXES]
                depth.add_metric([queue], sum(int(client.llen(k)) for k in keys))
        finally:
            client.close()
        yield depth

    def _states(self) -> Iterator[GaugeMetricFamily]:
        with self.service.sessions() as s:
            items, jobs = queries.open_items_by_status(s), queries.jobs_by_status(s)
        by_item = GaugeMetricFamily("vlmq_items", "Items not yet terminal, by status", labels=["status"])
        for status, n in items.items():
            by_item.add_metric([status], n)
        by_job = GaugeMetricFamily("vlmq_jobs", "Jobs by status", labels=["status"])
        for status, n in jobs.items():
            by_job.add_metric([status], n)
        yield by_item
        yield by_job


def state_registry(service: JobService, settings: Settings) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StateCollector(service, settings))
    return registry


@router.get("/metrics", response_class=Response)
async def metrics(request: Request, settings: SettingsDep) -> Response:
    """Counts over every tenant: for the operator's scraper, never for a tenant's key. It needs
    ``Authorization: Bearer <VLMQ_API__METRICS_TOKEN>``; with no token set it is refused."""
    check_scrape_token(settings, request.headers.get("authorization"))
    state: CollectorRegistry = request.app.state.metrics
    body = await run_in_threadpool(lambda: generate_latest(REGISTRY) + generate_latest(state))
    return Response(body, media_type=CONTENT_TYPE_LATEST)
