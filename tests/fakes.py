"""Fakes at I/O seams: an engine that answers from a function and records what it was asked."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from workers.inference.engine import GenerationOutput, GenerationRequest


class FakeEngine:
    name = "fake"
    model_id = "fake-model"

    def __init__(self, answer: Callable[[GenerationRequest], str]) -> None:
        self.answer = answer
        self.requests: list[GenerationRequest] = []

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        self.requests.extend(requests)
        return [GenerationOutput(r.request_id, self.answer(r), 100, 10, "stop") for r in requests]
