"""Thinking budget with a scripted fake pass: what is asked for, and what comes back."""

from __future__ import annotations

import asyncio

from workers.inference.budget import BUDGET_FLAG, FORCED_CLOSE, PassResult, generate_with_budget


class ScriptedPass:
    """Returns the scripted results in order and records each (prompt, max_tokens) it was given."""

    def __init__(self, *results: PassResult) -> None:
        self.results, self.calls = list(results), []  # type: ignore[var-annotated]

    async def __call__(self, prompt: str, max_tokens: int) -> PassResult:
        self.calls.append((prompt, max_tokens))
        return self.results.pop(0)


def run(p: ScriptedPass, max_new: int, budget: int | None):  # type: ignore[no-untyped-def]
    return asyncio.run(generate_with_budget(p, "P:", max_new, budget))


def test_short_output_is_one_pass() -> None:
    p = ScriptedPass(PassResult("<think>a</think><answer>b</answer>", 9, "stop"))
    res = run(p, 1000, 100)
    assert (res.passes, res.flags, p.calls) == (1, (), [("P:", 100)])


def test_reasoning_over_budget_is_closed_and_answered() -> None:
    p = ScriptedPass(PassResult("<think>long", 100, "length"), PassResult("yes</answer>", 4, "stop"))
    res = run(p, 1000, 100)
    assert p.calls == [("P:", 100), ("P:<think>long" + FORCED_CLOSE, 900)]
    assert res.text == "<think>long</think><answer>yes</answer>"
    assert (res.completion_tokens, res.finish_reason, res.flags) == (104, "stop", (BUDGET_FLAG,))


def test_answer_cut_by_first_pass_resumes_without_flag() -> None:
    p = ScriptedPass(
        PassResult("<think>x</think><answer>par", 100, "length"), PassResult("t</answer>", 3, "stop")
    )
    res = run(p, 1000, 100)
    assert p.calls[1] == ("P:<think>x</think><answer>par", 900)
    assert res.text.endswith("part</answer>") and res.flags == ()


def test_budget_at_or_over_max_tokens_is_plain_generation() -> None:
    p = ScriptedPass(PassResult("<think>abc", 50, "length"))
    res = run(p, 50, 8192)
    assert (p.calls, res.finish_reason, res.passes) == ([("P:", 50)], "length", 1)


def test_no_budget() -> None:
    p = ScriptedPass(PassResult("x", 10, "length"))
    assert run(p, 10, None).passes == 1
