"""TEST AND BENCHMARK ENGINE: NOT A MODEL. Select it with ``VLMQ_MODEL__ENGINE=fake``.

It loads nothing and computes nothing: each ``generate`` call sleeps ``model.fake_latency_seconds``
(once per batch, like a GPU step) and returns a fixed, well-formed ``<think>…</think><answer>…</answer>``
text per request. With ``model.fake_output_tokens`` set (the soak's setting), each output is that many
tokens on average instead (between half and one and a half times, fixed by the request's id: a page
gets the same length every time), about three quarters reasoning, and the batch sleeps
``model.fake_token_seconds`` more per token of its longest output, as a GPU decodes a batch's tokens in
step. The chaos and load tests (tests/chaos) use it so that thousands of items flow through
the real API, Postgres, Redis, S3 and worker processes in seconds; every result it produces says
``fake`` in its engine and model fields. Never deploy it.

Test hooks, by prompt text: a prompt containing ``[fake:malformed-greedy]`` gets malformed output at
temperature 0 (to exercise the temperature ladder); ``abort`` cuts a batch's sleep short, as a real
engine stops decoding aborted requests.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence

from workers.inference.engine import GenerationOutput, GenerationRequest

MALFORMED_HOOK = "[fake:malformed-greedy]"
FAKE_REASONING = "Fixed-latency fake engine: no model ran."
# Filler words for long outputs: a token is about one short word.
_WORDS = ("the", "page", "shows", "a", "table", "of", "figures", "with", "two", "columns", "and", "text")


class FakeEngine:
    name = "fake"

    def __init__(
        self, model_id: str = "fake", latency: float = 0.05, tokens: int = 0, token_seconds: float = 0.0
    ) -> None:
        self.model_id = model_id
        self.latency = latency
        self.tokens, self.token_seconds = tokens, token_seconds
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
        longest = max((self._length(r) for r in requests), default=0)
        try:
            wake.wait(self.latency + longest * self.token_seconds)
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

    def _length(self, r: GenerationRequest) -> int:
        """Output tokens of ``r``: 16 by default, else ``tokens`` varied by the request's id."""
        if not self.tokens:
            return 16
        spread = int.from_bytes(hashlib.sha256(r.request_id.encode()).digest()[:4], "big") / 2**32
        return min(r.max_new_tokens, max(4, int(self.tokens * (0.5 + spread))))

    def _output(self, r: GenerationRequest) -> GenerationOutput:
        n = self._length(r)
        if MALFORMED_HOOK in r.prompt and r.temperature == 0:
            text = "<answer>no reasoning</think>"
        elif self.tokens:
            answer = f"fake answer {r.request_id} {_filler(n // 4)}"
            text = f"<think>{_filler(3 * n // 4)}</think><answer>{answer}</answer>"
        else:
            text = f"<think>{FAKE_REASONING}</think><answer>fake answer {r.request_id}</answer>"
        return GenerationOutput(
            r.request_id, text, prompt_tokens=16, completion_tokens=n, finish_reason="stop"
        )


def _filler(words: int) -> str:
    return " ".join(_WORDS[i % len(_WORDS)] for i in range(words))
