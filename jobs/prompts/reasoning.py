"""Split GLM-4.1V-Thinking output into reasoning and answer.

The model writes ``<think>REASONING</think><answer>ANSWER</answer>``; inside the answer it may mark the
final result with ``<|begin_of_box|>…<|end_of_box|>``. The rules, forgiving but honest (the caller keeps
the raw text; every deviation from the form is named in ``flags``):

1. A turn-ending token (``<|endoftext|>``, ``<|user|>``, ``<|observation|>``, ``<|system|>``,
   ``<|assistant|>``) ends the output: text after it belongs to no answer of ours and is dropped
   (flag ``text_after_stop_token`` when it was not blank). A leading ``<|assistant|>`` is just removed.
2. The reasoning ends at the last ``</think>``. With no ``<think>`` before it, the text before it is the
   reasoning (flag ``think_unopened``: some chat templates put ``<think>`` in the prompt). Text before
   ``<think>`` is kept in the reasoning (flag ``text_before_think``).
3. No ``</think>`` but an ``<answer>``: the reasoning is the text before ``<answer>`` (flag
   ``think_unclosed``, or ``think_missing`` when there was no ``<think>`` either).
4. No ``</think>`` and no ``<answer>`` (this includes no tags at all, and the empty string): the reasoning
   was cut off. Everything is reasoning, the answer is empty: ``truncated`` (flag ``truncated``).
5. The answer is the first ``<answer>…</answer>`` after the reasoning. No ``</answer>`` (the model ran out
   of tokens in it): everything after ``<answer>`` (flag ``answer_unclosed``). No ``<answer>`` at all:
   the bare text after ``</think>`` (flag ``answer_untagged``). Text between ``</think>`` and
   ``<answer>``, or after ``</answer>``, is dropped (flags ``text_before_answer``, ``text_after_answer``).
6. Box markers are stripped from reasoning and answer, their contents kept; the answer's non-empty box
   contents are returned in ``boxes`` (flag ``box_unclosed`` for a box still open at the end).
7. ``malformed`` (flag ``malformed_tags``): a think/answer tag repeated, tags out of order, a closing tag
   with no opening one, or ``<think>`` never closed before ``<answer>``. Leftover tags are removed from the
   reasoning and answer texts. An ``</answer>`` missing at the very end is ``answer_unclosed``, not
   malformed: that is running out of tokens, not a broken format.
8. ``answer_missing`` (flag ``answer_missing``): the answer is empty after all of the above.

Grounding: ``regions`` reads the ``[[x1,y1,x2,y2]]`` boxes GLM-4.1V writes (several per box allowed,
``[[...],[...]]``), corners normalised to 0-1000 of the image's width and height, origin top left, and
maps them to the pixels of the image the model saw: ``x_px = x / 1000 * width``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
TAGS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)
BOX_OPEN, BOX_CLOSE = "<|begin_of_box|>", "<|end_of_box|>"
TURN_TOKENS = ("<|endoftext|>", "<|user|>", "<|observation|>", "<|system|>", "<|assistant|>")
_TURN = re.compile("|".join(re.escape(t) for t in TURN_TOKENS))
_TAG = re.compile("|".join(re.escape(t) for t in TAGS))
_BOX = re.compile(re.escape(BOX_OPEN) + r"(.*?)(?:" + re.escape(BOX_CLOSE) + r"|$)", re.DOTALL)
_NUM = r"\s*(-?\d+(?:\.\d+)?)\s*"
_QUAD = re.compile(r"\[" + ",".join([_NUM] * 4) + r"\]")
NORM = 1000  # GLM-4.1V's coordinate space


@dataclass(frozen=True)
class ParsedOutput:
    reasoning: str
    answer: str
    boxes: list[str] = field(default_factory=list)
    truncated: bool = False  # no </think> and no <answer>: the reasoning was cut off
    answer_missing: bool = False
    malformed: bool = False
    flags: list[str] = field(default_factory=list)


def split_output(text: str) -> ParsedOutput:
    flags: list[str] = []
    clean = _cut_at_turn_end(text, flags)
    malformed = _malformed(clean)
    if malformed:
        flags.append("malformed_tags")
    reasoning, rest = _divide(clean, flags)
    answer, boxes = _answer(rest, flags) if rest is not None else ("", [])
    if not answer:
        flags.append("answer_missing")
    reasoning = _untag(_unmark(reasoning), "\n")
    return ParsedOutput(reasoning, answer, boxes, rest is None, not answer, malformed, flags)


def _cut_at_turn_end(text: str, flags: list[str]) -> str:
    text = text.lstrip()
    if text.startswith("<|assistant|>"):  # an echoed generation prompt, not a new turn
        text = text[len("<|assistant|>") :]
    end = _TURN.search(text)
    if end is None:
        return text
    if _TURN.sub("", text[end.end() :]).strip():
        flags.append("text_after_stop_token")
    return text[: end.start()]


def _malformed(text: str) -> bool:
    counts = [text.count(t) for t in TAGS]
    if any(n > 1 for n in counts):
        return True
    if counts[3] and not counts[2]:
        return True  # </answer> with no <answer>
    if counts[0] and not counts[1] and counts[2]:
        return True  # <think> never closed, yet an answer follows
    present = [i for i in (text.find(t) for t in TAGS) if i >= 0]
    return present != sorted(present)


def _divide(text: str, flags: list[str]) -> tuple[str, str | None]:
    """(reasoning, the rest holding the answer); the rest is None when the reasoning was cut off."""
    close = text.rfind(THINK_CLOSE)
    if close >= 0:
        head, opened = text[:close], text.find(THINK_OPEN)
        if opened < 0 or opened > close:
            flags.append("think_unopened")
        elif head[:opened].strip():
            flags.append("text_before_think")
        return head, text[close + len(THINK_CLOSE) :]
    start = text.find(ANSWER_OPEN)
    if start >= 0:
        flags.append("think_unclosed" if THINK_OPEN in text[:start] else "think_missing")
        return text[:start], text[start:]
    flags.append("truncated")
    return text, None


def _answer(rest: str, flags: list[str]) -> tuple[str, list[str]]:
    start = rest.find(ANSWER_OPEN)
    if start < 0:
        if rest.strip():
            flags.append("answer_untagged")
        body = rest
    else:
        if rest[:start].strip():
            flags.append("text_before_answer")
        body = rest[start + len(ANSWER_OPEN) :]
        end = body.find(ANSWER_CLOSE)
        if end < 0:
            flags.append("answer_unclosed")
        else:
            if body[end + len(ANSWER_CLOSE) :].strip():
                flags.append("text_after_answer")
            body = body[:end]
    return _unbox(_untag(body, ""), flags)


def _unbox(answer: str, flags: list[str]) -> tuple[str, list[str]]:
    if answer.count(BOX_OPEN) > answer.count(BOX_CLOSE):
        flags.append("box_unclosed")
    boxes = [_unmark(b).strip() for b in _BOX.findall(answer)]
    return _unmark(answer).strip(), [b for b in boxes if b]


def _unmark(text: str) -> str:
    return text.replace(BOX_OPEN, "").replace(BOX_CLOSE, "")


def _untag(text: str, joiner: str) -> str:
    """Leftover think/answer tags out; in reasoning they become line breaks so pieces do not run together."""
    return _TAG.sub(joiner, text).strip()


@dataclass(frozen=True)
class Region:
    normalized: tuple[float, float, float, float]  # as written: x1, y1, x2, y2 in 0-1000
    box: tuple[int, int, int, int] | None  # pixels of the image, corners ordered, clamped inside it


def regions(box_text: str, size: tuple[int, int] | None) -> list[Region]:
    """Every ``[x1,y1,x2,y2]`` in one box's text; in pixels of an image of ``size`` (width, height)."""
    found = []
    for m in _QUAD.finditer(box_text):
        quad = (float(m[1]), float(m[2]), float(m[3]), float(m[4]))
        found.append(Region(quad, None if size is None else _to_pixels(quad, size)))
    return found


def _to_pixels(quad: tuple[float, ...], size: tuple[int, int]) -> tuple[int, int, int, int]:
    w, h = size

    def px(v: float, extent: int) -> int:
        return min(extent, max(0, round(v / NORM * extent)))

    x1, y1, x2, y2 = (px(quad[0], w), px(quad[1], h), px(quad[2], w), px(quad[3], h))
    return min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)
