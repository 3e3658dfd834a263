"""Thinking budget: cap the reasoning at N tokens, then make the model answer.

GLM-4.1V-Thinking can reason for thousands of tokens. When the first pass reaches the budget
without closing ``</think>``, the engine appends ``</think><answer>`` to prompt + output and resumes, so
the answer still comes (prefix caching makes the resumed prompt cheap). If the first pass closed its
reasoning but ran out of room inside the answer, it simply resumes. Engine-independent: the engine
passes a ``Pass`` function that runs one generation.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from workers.inference.engine import FinishReason

THINK_CLOSE = "</think>"
FORCED_CLOSE = "</think><answer>"
BUDGET_FLAG = "thinking_budget_reached"


@dataclass(frozen=True)
class PassResult:
    text: str  # decoded with special tokens kept, stop tokens removed
    tokens: int
    finish_reason: FinishReason


@dataclass(frozen=True)
class Budgeted:
    text: str
    completion_tokens: int
    finish_reason: FinishReason
    passes: int
    flags: tuple[str, ...]


Pass = Callable[[str, int], Awaitable[PassResult]]  # (prompt, max_tokens) -> result


def first_pass_tokens(max_new_tokens: int, thinking_budget: int | None) -> int:
    if not thinking_budget or thinking_budget >= max_new_tokens:
        return max_new_tokens
    return thinking_budget


async def generate_with_budget(
    run: Pass, prompt: str, max_new_tokens: int, thinking_budget: int | None
) -> Budgeted:
    first = await run(prompt, first_pass_tokens(max_new_tokens, thinking_budget))
    left = max_new_tokens - first.tokens
    if first.finish_reason == "stop" or left <= 0:
        return Budgeted(first.text, first.tokens, first.finish_reason, 1, ())
    if THINK_CLOSE in first.text:
        # Reasoning is closed; the answer ran out of room in the first pass: carry on.
        second = await run(prompt + first.text, left)
        return Budgeted(first.text + second.text, first.tokens + second.tokens, second.finish_reason, 2, ())
    second = await run(prompt + first.text + FORCED_CLOSE, left)
    text = first.text + FORCED_CLOSE + second.text
    return Budgeted(text, first.tokens + second.tokens, second.finish_reason, 2, (BUDGET_FLAG,))
