"""vLLM 0.26 engine: one AsyncLLM per worker process, fed by many task threads at once.

The AsyncLLM lives on its own asyncio loop in a daemon thread. ``generate`` (called from Celery task
threads) submits every request of its batch to that loop and waits; since several task threads do
this at once, the engine's continuous batching always has work from many batches, and no batch waits
for another's slowest request. The engine holds at most ``Settings.engine_backlog`` requests at once
(``workers.inference.backlog``); the task threads' other requests wait for a place, media fetched.
Tensor parallelism is a setting (1, 2, 4): vLLM starts its own worker processes, which is why the GPU
worker must not run inside a prefork child.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

from PIL import Image

from jobs.adapters import metrics
from jobs.config import Settings
from workers.inference import tensor_parallel
from workers.inference.backlog import Backlog
from workers.inference.budget import PassResult, generate_with_budget
from workers.inference.engine import FinishReason, GenerationOutput, GenerationRequest, strip_stop
from workers.inference.gate import ClaimGate
from workers.inference.prompts import build_messages
from workers.inference.video_inputs import vllm_video_input
from workers.startup import cache_env

log = logging.getLogger(__name__)


def _media(req: GenerationRequest) -> dict[str, Any] | None:
    """``multi_modal_data``: the page images, or the video clip (frames prep sampled + timestamps)."""
    if req.video is not None:
        return {"video": vllm_video_input(req.video)}
    return {"image": list(req.images)} if req.images else None


def request_timing(out: Any, clock: float | None = None) -> dict[str, Any] | None:
    """When vLLM's statistics are on: a finished request's path through the engine. ``arrival``: the
    wall-clock time the front end took it; the rest as seconds after it was queued in the engine core
    (``*_s``) and as wall-clock times (``*_at``). vLLM stamps those in the engine core with
    ``time.monotonic()``, which on Linux is one clock for every process of the host: ``clock`` (wall
    minus monotonic, taken here) turns them into wall-clock times, comparable with ``arrival`` and with
    when the worker got the output. So the time a request took to reach the engine core (its image
    tensors travel there) is told apart from the time its output took to come back."""
    m = getattr(out, "metrics", None)
    if m is None or not m.queued_ts:
        return None
    clock = time.time() - time.monotonic() if clock is None else clock

    def after(ts: float) -> float | None:
        return round(ts - m.queued_ts, 4) if ts else None

    def at(ts: float) -> float | None:
        return round(ts + clock, 4) if ts else None

    return {
        "id": out.request_id, "arrival": m.arrival_time, "scheduled_s": after(m.scheduled_ts),
        "first_token_s": after(m.first_token_ts), "last_token_s": after(m.last_token_ts),
        "queued_at": at(m.queued_ts), "first_token_at": at(m.first_token_ts), "done_at": at(m.last_token_ts),
        "prompt_tokens": len(out.prompt_token_ids or []), "output_tokens": m.num_generation_tokens,
    }  # fmt: skip


def pick_victim(processor: Any, priorities: dict[str, int], priority: int, slots: int) -> str | None:
    """The request to preempt for an urgent one of ``priority`` (VllmEngine._make_room), or None: the
    engine holds no more requests than its ``slots`` (one is or will be free), or none that has started
    is ``slots`` behind in the turn. Of those, the worst turn, then the least output so far. Reads vLLM's
    front-end state (``processor``: AsyncLLM.output_processor; internal, checked against 0.26): a
    request that gave its first token is running."""
    states = processor.request_states
    if len(states) <= slots:
        return None
    best: tuple[int, int, str] | None = None
    for vid, p in list(priorities.items()):
        if p < priority + slots:
            continue
        for internal in processor.external_req_ids.get(vid, ()):
            st = states.get(internal)
            if st is None or st.is_prefilling:
                continue
            key = (-p, st.detokenizer.num_output_tokens() if st.detokenizer else 0, vid)
            if best is None or key < best:
                best = key
    return None if best is None else best[2]


TIMING = "engine timing"  # the per-request log line's prefix (bench/gpu reads it back)
LOOP = "engine loop"  # the event loop's own line, every log_stats_seconds (see _log_stats)


def engine_args(settings: Settings) -> Any:
    from vllm import AsyncEngineArgs

    m = settings.model
    return AsyncEngineArgs(
        model=m.path,
        quantization=m.quantization,
        dtype=m.dtype,
        tensor_parallel_size=m.tensor_parallel_size,
        max_model_len=m.max_model_len,
        gpu_memory_utilization=m.gpu_memory_utilization,
        max_num_seqs=m.max_num_seqs,
        max_num_batched_tokens=m.max_num_batched_tokens,  # None: see _start
        limit_mm_per_prompt={"image": m.images_per_prompt, "video": 1},
        enable_prefix_caching=True,  # the thinking-budget resume re-sends prompt + output
        # Image preprocessing (resize, normalize, patchify: torch ops that release the GIL) runs in a
        # pool of renderer threads instead of on the engine's event loop, one image after another.
        # vLLM's processed-input cache is not thread-safe, and pages are never seen twice anyway.
        renderer_num_workers=max(1, m.renderer_workers),
        **({"mm_processor_cache_gb": 0} if m.renderer_workers > 1 else {}),
        seed=0,
        disable_log_stats=m.log_stats_seconds <= 0,
        scheduling_policy=m.scheduling_policy,  # "priority": requests served by their claim's turn
    )


class VllmEngine:
    name = "vllm"

    def __init__(self, settings: Settings) -> None:
        m = settings.model
        tensor_parallel.check(m.path, m.tensor_parallel_size)  # in a second, not after the load
        for name, value in (cache_env(m.compile_cache_dir) if m.compile_cache_dir else {}).items():
            os.environ.setdefault(name, value)  # the engine core (spawned) inherits them
        # vLLM forks its engine process by default, which fails once this process has touched CUDA
        # (a test process, a worker that ran a CUDA op): spawn always works.
        os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
        from transformers import AutoProcessor

        self.model_id = settings.model_id
        self.thinking_budget = m.thinking_budget
        self.ignore_eos = m.ignore_eos
        self._renderer_workers = m.renderer_workers
        self._stats_seconds = m.log_stats_seconds
        self._stats_task: Any = None
        self._vllm_ids: dict[str, set[str]] = {}  # request id -> its running vLLM request ids
        self._ids_lock = threading.Lock()
        self._scheduling = m.scheduling_policy
        # Urgent work (workers.inference.gate): a turn within the engine's first max_num_seqs (its slots).
        self._slots = m.max_num_seqs
        self._preempting = m.urgent_preemption and m.scheduling_policy == "priority"
        self._incoming = 0  # requests handed over by task threads, not yet counted by the backlog
        self._incoming_lock = threading.Lock()
        self.gate = ClaimGate(self._free, m.claim_ahead, self._slots)
        self._backlog = Backlog(settings.engine_backlog, self._slots, self._slots // 8, self.gate.freed)
        self._priorities: dict[str, int] = {}  # vLLM request id -> its priority
        self._preempted: set[str] = set()  # vLLM request ids aborted to make room: run again
        self.preemptions = 0
        t0 = time.monotonic()
        self._processor = AutoProcessor.from_pretrained(m.path, local_files_only=True)
        self._tokenizer = self._processor.tokenizer
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="vllm-loop", daemon=True)
        self._thread.start()
        t1 = time.monotonic()
        self._llm = self._call(self._start(settings))  # vLLM's log divides this further
        if self._stats_seconds > 0:
            self._stats_task = asyncio.run_coroutine_threadsafe(self._log_stats(), self._loop)
        t2 = time.monotonic()
        self._warm_up()
        self.load_seconds = time.monotonic() - t0
        # The worker's start line (workers.startup) shows these beside the process's own phases.
        warm_up = self.load_seconds - (t2 - t0)
        self.start_phases = {"processor": t1 - t0, "vllm_engine": t2 - t1, "warm_up": warm_up}
        log.info("vLLM engine up in %.1f s (tp=%d)", self.load_seconds, m.tensor_parallel_size)

    def _warm_up(self) -> None:
        """One small request before the worker says it is ready: the first request through a fresh
        engine pays one-time costs (kernel selection, the vision path) that real batches should not."""
        page = Image.new("RGB", (911, 1288), "white")
        self.generate([GenerationRequest("warm-up", "Describe this page.", [page], max_new_tokens=8)])

    async def _start(self, settings: Settings) -> Any:
        from vllm.usage.usage_lib import UsageContext
        from vllm.v1.engine.async_llm import AsyncLLM

        # A batch worker is vLLM's offline use: the LLM class's scheduler defaults (the raw baseline's),
        # not the engine API's 2,048 tokens a step (with those, the worker's engine prefilled ~14k prompt
        # tokens/s on the H100 against the raw engine's ~19k: BENCHMARKS.md, session 4).
        return AsyncLLM.from_engine_args(engine_args(settings), usage_context=UsageContext.LLM_CLASS)

    async def _log_stats(self) -> None:
        """vLLM's throughput line every ``log_stats_seconds`` (its API server runs the same loop), and
        this loop's own line: how late the loop woke (``lag_ms``: it was busy, or waited for the GIL),
        the share of the interval its thread ran (``loop_cpu``: vLLM's output processing and the
        requests' coroutines run there), the CPU of the whole process, every thread (``process_cpu``,
        in cores; vLLM's engine core is another process), and the backlog: requests holding a place
        (``inside``) and waiting for one (``waiting``)."""
        wall, loop_cpu, cpu = time.monotonic(), time.thread_time(), time.process_time()
        while True:
            await asyncio.sleep(self._stats_seconds)
            lag = time.monotonic() - wall - self._stats_seconds
            await self._llm.do_log_stats()
            now, now_loop, now_cpu = time.monotonic(), time.thread_time(), time.process_time()
            span = now - wall
            line = {
                "at": round(time.time(), 3), "lag_ms": round(lag * 1000, 1),
                "loop_cpu": round((now_loop - loop_cpu) / span, 3),
                "process_cpu": round((now_cpu - cpu) / span, 2),
                "inside": self._backlog.inside, "waiting": self._backlog.waiting,
            }  # fmt: skip
            log.info("%s %s", LOOP, json.dumps(line))
            wall, loop_cpu, cpu = now, now_loop, now_cpu

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def prompt_text(self, req: GenerationRequest) -> str:
        messages = build_messages(req.prompt, len(req.images), video=req.video is not None)
        text: str = self._processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return text

    def _free(self) -> int:
        """Places the engine has for more claims (the gate's measure): the backlog's free places less
        the requests on their way to it."""
        return self._backlog.free - self._incoming

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        with self._incoming_lock:
            self._incoming += len(requests)
        self.gate.handed()  # the backlog counts them from here (incoming, then waiting or inside)
        return list(self._call(self._batch(requests)))

    async def _batch(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        return list(await asyncio.gather(*(self._one(r) for r in requests)))

    async def _one(self, req: GenerationRequest) -> GenerationOutput:
        with self._incoming_lock:  # the backlog counts it from its next step (no await between)
            self._incoming -= 1
        async with self._backlog.place(req.request_id, req.priority) as go:
            if go:
                return await self._run(req)
        # Its job stopped while it waited for a place: nothing was generated (as for an aborted request).
        return GenerationOutput(req.request_id, "", 0, 0, "stop")

    async def _run(self, req: GenerationRequest) -> GenerationOutput:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        prompt = self.prompt_text(req)
        mm = _media(req)
        prompt_tokens = 0

        async def run(text: str, max_tokens: int) -> PassResult:
            nonlocal prompt_tokens
            sp = SamplingParams(
                max_tokens=max_tokens,
                temperature=req.temperature,
                # No incremental detokenizing: vLLM's front end would decode every sequence at every
                # step in this process, competing for the GIL with the task threads; one decode at the
                # end gives the same text (no stop strings are used, only stop token ids).
                detokenize=False,
                ignore_eos=self.ignore_eos,
                output_kind=RequestOutputKind.FINAL_ONLY,
            )
            rendered = await self._render(text, mm)
            while True:  # again from the start while it is preempted (see _make_room)
                final, vid = None, f"{req.request_id}-{uuid.uuid4().hex[:8]}"
                self._track(req.request_id, vid, True, req.priority)
                room = self._make_room(vid, req.priority) if self._urgent(req.priority) else None
                try:
                    async for out in self._llm.generate(rendered, sp, request_id=vid, **self._priority(req)):
                        final = out
                finally:
                    if room is not None:
                        room.cancel()
                    self._track(req.request_id, vid, False)
                if vid not in self._preempted:
                    break
                self._preempted.discard(vid)
                rendered = await self._render(text, mm)  # vLLM's processed input is used up
            if final is None:  # aborted (its job was cancelled) before any output: nothing to keep
                return PassResult("", 0, "stop")
            if self._stats_seconds > 0 and (timing := request_timing(final)) is not None:
                # When this coroutine got the output: how far behind the engine the worker's side is.
                log.info("%s %s", TIMING, json.dumps({**timing, "delivered": time.time()}))
            prompt_tokens = prompt_tokens or len(final.prompt_token_ids or [])
            o = final.outputs[0]
            finish: FinishReason = "length" if o.finish_reason == "length" else "stop"
            text = self._tokenizer.decode(o.token_ids, skip_special_tokens=False)
            return PassResult(strip_stop(text), len(o.token_ids), finish)

        res = await generate_with_budget(run, prompt, req.max_new_tokens, self.thinking_budget)
        return GenerationOutput(
            request_id=req.request_id,
            text=res.text,
            prompt_tokens=prompt_tokens,
            completion_tokens=res.completion_tokens,
            finish_reason=res.finish_reason,
            flags=res.flags,
        )

    def _priority(self, req: GenerationRequest) -> dict[str, int]:
        """vLLM refuses a priority unless its scheduler orders by priority."""
        return {"priority": req.priority} if self._scheduling == "priority" else {}

    def _track(self, request_id: str, vllm_id: str, running: bool, priority: int = 0) -> None:
        with self._ids_lock:
            ids = self._vllm_ids.setdefault(request_id, set())
            (ids.add if running else ids.discard)(vllm_id)
            if running:
                self._priorities[vllm_id] = priority
            else:
                self._priorities.pop(vllm_id, None)
            if not ids:
                del self._vllm_ids[request_id]

    def _urgent(self, priority: int) -> bool:
        """Urgent, and the engine holds more requests than it has slots: room may have to be made."""
        return self._preempting and priority < self._slots and self._backlog.inside > self._slots

    def _make_room(self, vid: str, priority: int) -> asyncio.Task[None]:
        """Urgent request ``vid`` is being added to vLLM: once it is in (its next steps), if the engine
        holds more requests than it runs, abort the running request at least ``max_num_seqs`` behind it
        in the turn with the least output so far; it runs again from the start (``_run``), its prompt
        in the prefix cache. What vLLM 0.26's priority scheduler does only when KV blocks run short
        (vllm-project/vllm#40004)."""

        async def make_room() -> None:
            for _ in range(200):  # the request reaches the front end within a few loop turns
                if vid in self._llm.output_processor.external_req_ids:
                    break
                await asyncio.sleep(0.005)
            victim = pick_victim(self._llm.output_processor, self._priorities, priority, self._slots)
            if victim is not None:
                self._preempted.add(victim)
                self.preemptions += 1
                metrics.PREEMPTIONS.inc()
                log.info("preempted %s (priority %d) for urgent %s (priority %d)",
                         victim, self._priorities.get(victim, -1), vid, priority)  # fmt: skip
                await self._llm.abort(victim)

        return asyncio.get_running_loop().create_task(make_room())

    def abort(self, request_ids: Sequence[str]) -> None:
        """Stop these requests now (their job was cancelled); called from the worker's heartbeat
        thread. vLLM finishes them as aborted, and the worker drops what they produced."""
        self._call(self._abort(list(request_ids)))

    async def _abort(self, request_ids: list[str]) -> None:
        waiting = self._backlog.cancel(request_ids)  # not in the engine yet: dropped when their turn comes
        with self._ids_lock:
            ids = [v for r in request_ids for v in self._vllm_ids.get(r, ())]
        if ids:
            self._preempted.difference_update(ids)  # stopped, not to run again
            await self._llm.abort(ids)
        log.info("aborted %d engine requests, dropped %d waiting for a place", len(ids), waiting)

    async def _render(self, text: str, mm: dict[str, Any] | None) -> Any:
        """Prompt + media -> the engine's processed input, on vLLM's renderer thread pool (the same
        path ``LLM.generate`` takes), so that many requests are preprocessed at once."""
        inputs: dict[str, Any] = {"prompt": text}
        if mm:
            inputs["multi_modal_data"] = mm
        if self._renderer_workers <= 1:
            return inputs  # AsyncLLM preprocesses it on its event loop
        (processed,) = await self._llm.renderer.render_cmpl_async([inputs])
        return processed

    def shutdown(self) -> None:
        if self._stats_task is not None:
            self._stats_task.cancel()
        self._llm.shutdown()
        self._loop.call_soon_threadsafe(self._loop.stop)
