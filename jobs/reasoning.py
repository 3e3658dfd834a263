"""Split GLM-4.1V-Thinking output into reasoning and answer.

The model writes ``<think>REASONING</think><answer>ANSWER</answer>``; inside the answer it may mark the
final result with ``<|begin_of_box|>…<|end_of_box|>``. Rules, forgiving but honest (every deviation
is flagged, nothing is dropped):

- Stray control tokens (``<|endoftext|>``, ``<|user|>``, ``<|observation|>``) are removed.
- Reasoning is the text before the first ``</think>`` (after an opening ``<think>`` if any).
  No ``</think>`` at all: the reasoning was cut off (``truncated``), everything is reasoning, no answer.
- Answer is the text after ``</think>``: inside ``<answer>…</answer>`` when present; with no closing
  tag, everything after ``<answer>`` (flag ``answer_unclosed``); with no ``<answer>`` tag, the bare
  text after ``</think>`` (flag ``answer_untagged``).
- Box markers are stripped from the answer; their contents are returned in ``boxes``.
- Repeated or out-of-order tags set ``malformed``; an empty answer sets ``answer_missing``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
BOX_OPEN, BOX_CLOSE = "<|begin_of_box|>", "<|end_of_box|>"
CONTROL_TOKENS = ("<|endoftext|>", "<|user|>", "<|observation|>", "<|assistant|>")
_BOX = re.compile(re.escape(BOX_OPEN) + r"(.*?)(?:" + re.escape(BOX_CLOSE) + r"|$)", re.DOTALL)


@dataclass(frozen=True)
class ParsedOutput:
    reasoning: str
    answer: str
    boxes: list[str] = field(default_factory=list)
    truncated: bool = False
    answer_missing: bool = False
    malformed: bool = False
    flags: list[str] = field(default_factory=list)


def _strip_control(text: str) -> str:
    for tok in CONTROL_TOKENS:
        text = text.replace(tok, "")
    return text


def _boxes(answer: str) -> tuple[str, list[str]]:
    boxes = [m.strip() for m in _BOX.findall(answer)]
    return answer.replace(BOX_OPEN, "").replace(BOX_CLOSE, ""), boxes


def _answer_part(rest: str, flags: list[str]) -> str:
    start = rest.find(ANSWER_OPEN)
    if start < 0:
        if rest.strip():
            flags.append("answer_untagged")
        return rest
    if rest[:start].strip():
        flags.append("text_before_answer")
    body = rest[start + len(ANSWER_OPEN) :]
    end = body.find(ANSWER_CLOSE)
    if end < 0:
        flags.append("answer_unclosed")
        return body
    if body[end + len(ANSWER_CLOSE) :].strip():
        flags.append("text_after_answer")
    return body[:end]


def _malformed(text: str) -> bool:
    counts = [text.count(t) for t in (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)]
    if any(n > 1 for n in counts):
        return True
    order = [text.find(t) for t in (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)]
    present = [i for i in order if i >= 0]
    return present != sorted(present)


def split_output(text: str) -> ParsedOutput:
    clean = _strip_control(text)
    flags: list[str] = []
    malformed = _malformed(clean)
    if malformed:
        flags.append("malformed_tags")
    close = clean.find(THINK_CLOSE)
    if close < 0:
        reasoning = clean.replace(THINK_OPEN, "", 1)
        flags.append("truncated")
        return ParsedOutput(reasoning.strip(), "", [], True, True, malformed, [*flags, "answer_missing"])
    head, rest = clean[:close], clean[close + len(THINK_CLOSE) :]
    opened = head.find(THINK_OPEN)
    if opened < 0:
        flags.append("think_unopened")
    reasoning = head[opened + len(THINK_OPEN) :] if opened >= 0 else head
    answer, boxes = _boxes(_answer_part(rest, flags))
    answer = answer.replace(ANSWER_OPEN, "").replace(ANSWER_CLOSE, "").strip()
    missing = not answer
    if missing:
        flags.append("answer_missing")
    return ParsedOutput(reasoning.strip(), answer, boxes, False, missing, malformed, flags)
