"""The reasoning/answer split on realistic GLM-4.1V-Thinking outputs, good and broken."""

from __future__ import annotations

import pytest

from jobs.reasoning import split_output

GOOD = (
    "<think>The page is a quarterly report. The title reads 'Q3 results'; a table lists revenue by "
    "region, and the bottom line shows the total.</think><answer>A quarterly report titled "
    "<|begin_of_box|>Q3 results<|end_of_box|> with a revenue table by region.</answer>"
)


def test_well_formed_output() -> None:
    p = split_output(GOOD)
    assert p.reasoning.startswith("The page is a quarterly report.")
    assert p.answer == "A quarterly report titled Q3 results with a revenue table by region."
    assert p.boxes == ["Q3 results"]
    assert (p.truncated, p.answer_missing, p.malformed, p.flags) == (False, False, False, [])


def test_leading_newlines_and_trailing_eos_are_tolerated() -> None:
    p = split_output("\n<think>\nshort\n</think>\n<answer>\nYes.\n</answer><|endoftext|>")
    assert (p.reasoning, p.answer, p.flags) == ("short", "Yes.", [])


def test_truncated_mid_reasoning() -> None:
    p = split_output("<think>The table has three columns and the first row says")
    assert p.truncated and p.answer_missing and p.answer == ""
    assert p.reasoning == "The table has three columns and the first row says"
    assert "truncated" in p.flags


def test_reasoning_closed_but_no_answer() -> None:
    p = split_output("<think>done thinking</think>")
    assert not p.truncated and p.answer_missing
    assert p.flags == ["answer_missing"]


def test_answer_without_closing_tag() -> None:
    p = split_output("<think>r</think><answer>The total is 42")
    assert p.answer == "The total is 42" and "answer_unclosed" in p.flags
    assert not p.answer_missing


def test_answer_without_tags_after_reasoning() -> None:
    p = split_output("<think>r</think>Plain answer.")
    assert p.answer == "Plain answer." and p.flags == ["answer_untagged"]


def test_missing_think_open() -> None:
    p = split_output("I look at the chart.</think><answer>A bar chart.</answer>")
    assert p.reasoning == "I look at the chart." and p.answer == "A bar chart."
    assert p.flags == ["think_unopened"]


def test_stray_user_token_is_removed() -> None:
    p = split_output("<think>a</think><answer>b</answer><|user|>")
    assert p.answer == "b" and p.flags == []


@pytest.mark.parametrize(
    "text",
    [
        "<think>a</think><think>b</think><answer>c</answer>",
        "<answer>c</answer><think>a</think>",
        "<think>a</think><answer>b</answer><answer>c</answer>",
    ],
)
def test_repeated_or_out_of_order_tags_are_malformed(text: str) -> None:
    p = split_output(text)
    assert p.malformed and "malformed_tags" in p.flags


def test_unclosed_box_keeps_its_content() -> None:
    p = split_output("<think>r</think><answer><|begin_of_box|>7")
    assert p.answer == "7" and p.boxes == ["7"]


def test_empty_output() -> None:
    p = split_output("")
    assert p.truncated and p.answer_missing and p.reasoning == "" and p.answer == ""


def test_random_text_from_an_untrained_model() -> None:
    # What a random-weight model emits: no tags at all. Nothing is lost: it is all kept as reasoning.
    raw = "x7 qv <|image|> lorem"
    p = split_output(raw)
    assert p.truncated and p.reasoning == raw
