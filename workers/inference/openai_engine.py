"""The "openai" engine: any server speaking OpenAI's chat completions API runs the model (``vllm serve``,
SGLang, a hosted API; docs/engines.md). Select it with ``VLMQ_MODEL__ENGINE=openai``.

Like VllmEngine, one asyncio loop in a daemon thread serves every task thread of the worker: each
``generate`` submits its batch's requests to it and waits, so many batches are in flight at once, up
to ``model.openai.max_in_flight`` requests over every server (keep-alive connections of one
``httpx.AsyncClient``). Pages are encoded (PNG data URLs, or presigned GET URLs of prep's stored pages)
in the calling task thread, never on the loop. Servers, balancing and retries:
workers.inference.openai_http; the request and reply shapes, reasoning included:
workers.inference.openai_wire.

The thinking budget is workers.inference.budget's, unchanged: past the budget the assistant message is
continued with ``</think><answer>`` appended (flag ``thinking_budget_reached``). A "generic" server
cannot continue a message: there the budget is not applied, the request gets all ``max_new_tokens``.

``abort`` cancels the HTTP requests of a stopped job (closing the connection makes vLLM abort them);
those requests return empty outputs, which the worker drops.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from typing import Any

import httpx

from jobs.config import Settings
from jobs.errors import EngineError
from workers.inference.budget import PassResult, generate_with_budget
from workers.inference.engine import GenerationOutput, GenerationRequest
from workers.inference.openai_http import Endpoints, RetryPolicy, post_chat
from workers.inference.openai_wire import (
    BadReply,
    Publish,
    chat_body,
    continues,
    data_urls,
    parse_reply,
    user_turn,
)

log = logging.getLogger(__name__)


class S3Publisher:
    """Pages as presigned S3 GET URLs (``model.openai.media = "presigned"``) of the PNGs prep stored
    (``GenerationRequest.image_keys``), valid ``presign_seconds``: the server reads prep's own object, so
    nothing is written again and the worker downloads no pixels (``OpenAIEngine.needs_pixels``).
    Presigning is signing alone, no S3 request. A request with pixels but no stored pages (made outside
    the worker) sends them as data URLs. Only for a server allowed to read this deployment's bucket."""

    def __init__(self, settings: Settings) -> None:
        from jobs.adapters.storage import S3BlobStore

        self._store = S3BlobStore(settings)
        self._seconds = settings.model.openai.presign_seconds

    def __call__(self, req: GenerationRequest) -> list[str]:
        if not req.image_keys:
            return data_urls(req)
        return [self.presign(k) for k in req.image_keys]

    def presign(self, key: str) -> str:
        url: str = self._store.client.generate_presigned_url(
            "get_object", Params={"Bucket": self._store.bucket, "Key": key}, ExpiresIn=self._seconds
        )
        return url


class OpenAIEngine:
    name = "openai"

    def __init__(self, settings: Settings, publish: Publish | None = None) -> None:
        m, o = settings.model, settings.model.openai
        self.model_id = m.model_id or o.served_model or settings.model_id
        self.served_model = o.served_model or self.model_id
        self.server = o.server
        self.thinking_budget = m.thinking_budget if continues(o.server) else None
        self.extra_body = dict(o.extra_body)
        # Task threads that keep max_in_flight requests going with batches half full (cf. gpu_tasks).
        self.task_threads = m.batches_in_flight or max(
            1, -(-2 * o.max_in_flight // settings.limits.batch_size)
        )
        self._publish = publish or (S3Publisher(settings) if o.media == "presigned" else data_urls)
        # Presigned pages are read by the server from prep's objects: the worker need not fetch them.
        self.needs_pixels = o.media != "presigned"
        self._endpoints = Endpoints(o.base_urls)
        self._policy = RetryPolicy(o.max_retries, o.backoff_base_s, o.backoff_max_s)
        self._headers = {"Authorization": f"Bearer {o.api_key.get_secret_value()}"} if o.api_key else {}
        self._tasks: dict[str, set[asyncio.Future[Any]]] = {}  # request id -> its running passes
        self._active: set[str] = set()  # request ids in a batch now
        self._aborted: set[str] = set()  # ... of those, the ones aborted
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="openai-loop", daemon=True)
        self._thread.start()
        timeout = httpx.Timeout(o.read_timeout_s, connect=o.connect_timeout_s, pool=None)
        limits = httpx.Limits(max_connections=o.max_in_flight, max_keepalive_connections=o.max_in_flight)
        self._client, self._slots = self._call(self._open(timeout, limits, o.max_in_flight))
        if continues(o.server) is False and m.thinking_budget:
            log.warning(
                "openai engine: server %r cannot continue a message; thinking budget not applied", o.server
            )
        self._probe()

    async def _open(
        self, timeout: httpx.Timeout, limits: httpx.Limits, slots: int
    ) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
        return httpx.AsyncClient(timeout=timeout, limits=limits), asyncio.Semaphore(slots)

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _probe(self) -> None:
        """Say at start which servers answer; one that does not is no reason to refuse to start (its
        requests are retried, then given back, until it does)."""
        for e in self._endpoints.all:
            try:
                r = httpx.get(f"{e.url}/models", headers=self._headers, timeout=5)
                models = [m.get("id") for m in r.json().get("data", [])] if r.status_code == 200 else []
                log.info("openai engine: %s answers %d, models %s", e.label, r.status_code, models)
                if models and self.served_model not in models:
                    log.warning("openai engine: %s does not list model %r", e.label, self.served_model)
            except (httpx.HTTPError, ValueError, AttributeError) as err:
                log.warning("openai engine: %s not answering yet: %s", e.label, type(err).__name__)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        turns = [user_turn(r, self._publish) for r in requests]  # encoding here, not on the loop
        return list(self._call(self._batch(requests, turns)))

    async def _batch(
        self, requests: Sequence[GenerationRequest], turns: list[list[dict[str, Any]]]
    ) -> list[GenerationOutput]:
        # A TaskGroup: the first request that fails for good cancels the batch's others (the whole
        # batch goes back, Engine.generate's contract), instead of leaving them running unseen.
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(self._one(r, t)) for r, t in zip(requests, turns, strict=True)]
        except ExceptionGroup as group:
            # The worker judges one error (jobs.errors: TransportError gives the pages back for longer).
            raise _first(group) from None
        return [t.result() for t in tasks]

    async def _one(self, req: GenerationRequest, turn: list[dict[str, Any]]) -> GenerationOutput:
        usage = {"prompt_tokens": 0}  # the first pass's: a continuation re-sends the same prompt
        self._active.add(req.request_id)
        try:
            res = await generate_with_budget(
                lambda prefix, n: self._pass(req, turn, prefix, n, usage), "", req.max_new_tokens,
                self.thinking_budget,
            )  # fmt: skip
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if req.request_id in self._aborted and not (current and current.cancelling()):
                return _empty(req)  # aborted (its job stopped): nothing to keep
            raise
        finally:
            self._active.discard(req.request_id)
            self._aborted.discard(req.request_id)
        return GenerationOutput(
            req.request_id, res.text, usage["prompt_tokens"], res.completion_tokens, res.finish_reason,
            res.flags,
        )  # fmt: skip

    async def _pass(
        self, req: GenerationRequest, turn: list[dict[str, Any]], prefix: str, n: int, usage: dict[str, int]
    ) -> PassResult:
        """One request to a server: a fresh turn (``prefix`` "") or the continuation of ``prefix``."""
        body = chat_body(self.served_model, turn, prefix, n, req.temperature, self.server, self.extra_body)
        headers = {**self._headers, "X-Request-Id": req.request_id}
        async with self._slots:
            if req.request_id in self._aborted:  # stopped while it waited for a slot, or between passes
                raise asyncio.CancelledError
            call = asyncio.ensure_future(
                post_chat(self._client, self._endpoints, body, headers, self._policy)
            )
            self._tasks.setdefault(req.request_id, set()).add(call)
            try:
                payload = await call
            except asyncio.CancelledError:
                call.cancel()
                raise
            finally:
                self._untrack(req.request_id, call)
        try:
            reply = parse_reply(payload, continuation=bool(prefix))
        except BadReply as e:
            raise EngineError(str(e)) from e
        if not prefix:
            usage["prompt_tokens"] = reply.prompt_tokens
        return PassResult(reply.text, reply.completion_tokens, reply.finish_reason)

    def _untrack(self, request_id: str, call: asyncio.Future[Any]) -> None:
        calls = self._tasks.get(request_id)
        if calls is not None:
            calls.discard(call)
            if not calls:
                del self._tasks[request_id]

    def abort(self, request_ids: Sequence[str]) -> None:
        """Stop these requests now (their job was cancelled); called from the worker's heartbeat thread.
        Their HTTP requests are cancelled (the connection closes, so the server stops generating)."""
        self._call(self._abort(list(request_ids)))

    async def _abort(self, request_ids: list[str]) -> None:
        self._aborted.update(r for r in request_ids if r in self._active)
        calls = [c for r in request_ids for c in self._tasks.get(r, ())]
        for c in calls:
            c.cancel()
        log.info("aborted %d HTTP requests of %d engine requests", len(calls), len(request_ids))

    def shutdown(self) -> None:
        self._call(self._client.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


def _first(group: BaseExceptionGroup[Any]) -> BaseException:
    """The first failure of a batch, out of the TaskGroup's group (nested groups included)."""
    first = group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first


def _empty(req: GenerationRequest) -> GenerationOutput:
    return GenerationOutput(req.request_id, "", 0, 0, "stop")
