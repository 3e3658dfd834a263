"""TEST AND BENCHMARK ENGINE: NOT A MODEL. Select it with ``VLMQ_MODEL__ENGINE=fake``.

It loads nothing and computes nothing: each ``generate`` call sleeps ``model.fake_latency_seconds``
(once per batch, like a GPU step) and returns a fixed, well-formed ``<think>…</think><answer>…</answer>``
text per request. The chaos and load tests (tests/chaos) use it so that thousands of items flow through
the real API, Postgres, Redis, S3 and worker processes in seconds; every result it produces says
``fake`` in its engine and model fields. Never deploy it.

Test hooks, by prompt text: a prompt containing ``[fake:malformed-greedy]`` gets malformed output at
temperature 0 (to exercise the temperature ladder); ``abort`` cuts a batch's sleep short, as a real
engine stops decoding aborted requests.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from workers.inference.engine import GenerationOutput, GenerationRequest

MALFORMED_HOOK = "[fake:malformed-greedy]"
FAKE_REASONING = "Fixed-latency fake engine: no model ran."


class FakeEngine:
    name = "fake"

    def __init__(self, model_id: str = "fake", latency: float = 0.05) -> None:
        self.model_id = model_id
        self.latency = latency
        self.aborted: set[str] = set()
        self.calls = 0
        self._lock = threading.Lock()
        self._waits: dict[str, threading.Event] = {}

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        wake = threading.Event()
        with self._lock:
            self.calls += 1
            for r in requests:
                self._waits[r.request_id] = wake
        try:
            wake.wait(self.latency)
        finally:
            with self._lock:
                for r in requests:
                    self._waits.pop(r.request_id, None)
        return [self._output(r) for r in requests]

    def abort(self, request_ids: Sequence[str]) -> None:
        with self._lock:
            self.aborted.update(request_ids)
            for rid in request_ids:
                if rid in self._waits:
                    self._waits[rid].set()

    def _output(self, r: GenerationRequest) -> GenerationOutput:
        if MALFORMED_HOOK in r.prompt and r.temperature == 0:
            text = "<answer>no reasoning</think>"
        else:
            text = f"<think>{FAKE_REASONING}</think><answer>fake answer {r.request_id}</answer>"
        return GenerationOutput(
            r.request_id, text, prompt_tokens=16, completion_tokens=16, finish_reason="stop"
        )
