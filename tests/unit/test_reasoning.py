"""The reasoning/answer split on realistic GLM-4.1V-Thinking outputs, good and broken."""

from __future__ import annotations

import dataclasses
import random

import pytest

from jobs.prompts.reasoning import BOX_CLOSE, BOX_OPEN, TAGS, regions, split_output

GOOD = (
    "<think>Got it, let's look at this page. The heading reads 'Q3 results'. Below it there is a table "
    "with three columns: region, revenue, growth. EMEA is 4.1M, APAC 3.2M, Americas 5.0M, so the total "
    "is 12.3M.</think><answer>The page is a quarterly report titled <|begin_of_box|>Q3 results"
    "<|end_of_box|>; total revenue is <|begin_of_box|>12.3M<|end_of_box|>.</answer>"
)


def test_well_formed_output_with_boxes() -> None:
    p = split_output(GOOD)
    assert p.reasoning.startswith("Got it, let's look at this page.") and p.reasoning.endswith("12.3M.")
    assert p.answer == "The page is a quarterly report titled Q3 results; total revenue is 12.3M."
    assert p.boxes == ["Q3 results", "12.3M"]
    assert (p.truncated, p.answer_missing, p.malformed, p.flags) == (False, False, False, [])


def test_newlines_around_tags_and_the_end_of_text_token() -> None:
    text = "\n<think>\nThe chart has four bars.\nThe tallest is March.\n</think>\n<answer>\nMarch\n</answer>"
    p = split_output(text + "<|endoftext|>\n")
    assert p.reasoning == "The chart has four bars.\nThe tallest is March."
    assert (p.answer, p.flags) == ("March", [])


def test_result_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        split_output(GOOD).answer = "x"  # type: ignore[misc]


def test_truncated_mid_reasoning() -> None:
    p = split_output("<think>Let me read the table row by row. The first row says")
    assert p.truncated and p.answer_missing and not p.malformed and p.answer == ""
    assert p.reasoning == "Let me read the table row by row. The first row says"
    assert p.flags == ["truncated", "answer_missing"]


def test_reasoning_closed_but_no_answer() -> None:
    p = split_output("<think>I have read the page.</think>")
    assert not p.truncated and p.answer_missing and p.flags == ["answer_missing"]


def test_empty_answer_tags() -> None:
    p = split_output("<think>r</think><answer>  </answer>")
    assert p.answer_missing and not p.malformed and p.flags == ["answer_missing"]


def test_answer_without_closing_tag_is_kept_and_flagged() -> None:
    p = split_output("<think>r</think><answer>The total is <|begin_of_box|>42")
    assert (p.answer, p.boxes) == ("The total is 42", ["42"])
    assert p.flags == ["answer_unclosed", "box_unclosed"]
    assert not p.answer_missing and not p.malformed and not p.truncated


def test_answer_without_tags_after_reasoning() -> None:
    p = split_output("<think>r</think>Plain answer.")
    assert p.answer == "Plain answer." and p.flags == ["answer_untagged"]


def test_think_opened_in_the_prompt() -> None:
    # Some chat templates end the prompt with <think>, so the output starts inside the reasoning.
    p = split_output("I look at the chart.</think><answer>A bar chart.</answer>")
    assert (p.reasoning, p.answer, p.flags) == ("I look at the chart.", "A bar chart.", ["think_unopened"])
    assert not p.malformed


def test_think_never_closed_but_an_answer_follows() -> None:
    p = split_output("<think>The sign says STOP.<answer>STOP</answer>")
    assert (p.reasoning, p.answer) == ("The sign says STOP.", "STOP")
    assert p.malformed and not p.truncated and "think_unclosed" in p.flags


def test_answer_with_no_reasoning_at_all() -> None:
    p = split_output("<answer>Two cats.</answer>")
    assert (p.reasoning, p.answer, p.flags) == ("", "Two cats.", ["think_missing"])
    assert not p.malformed and not p.truncated


@pytest.mark.parametrize("token", ["<|endoftext|>", "<|user|>", "<|observation|>"])
def test_trailing_stop_token_is_removed(token: str) -> None:
    p = split_output(f"<think>a</think><answer>b</answer>{token}")
    assert (p.answer, p.flags) == ("b", [])


def test_hallucinated_next_turn_is_cut_and_flagged() -> None:
    p = split_output("<think>a</think><answer>b</answer><|user|>\nNow describe page 2.<|assistant|>sure")
    assert (p.answer, p.flags) == ("b", ["text_after_stop_token"])


def test_echoed_assistant_prompt_is_removed() -> None:
    p = split_output("<|assistant|>\n<think>a</think><answer>b</answer>")
    assert (p.reasoning, p.answer, p.flags) == ("a", "b", [])


def test_empty_and_blank_output() -> None:
    for text in ("", "  \n\n"):
        p = split_output(text)
        assert p.truncated and p.answer_missing and not p.malformed
        assert (p.reasoning, p.answer, p.boxes) == ("", "", [])


def test_random_text_from_an_untrained_model() -> None:
    # What a random-weight model emits: no tags at all. Nothing is lost: it is all kept as reasoning.
    raw = "x7 qv <|image|> lorem"
    p = split_output(raw)
    assert p.truncated and p.reasoning == raw and p.answer == ""


def test_nested_think_is_malformed_but_loses_nothing() -> None:
    p = split_output("<think>a<think>b</think>c</think><answer>d</answer>")
    assert p.malformed and p.answer == "d"
    assert p.reasoning.split() == ["a", "b", "c"]


def test_thinking_budget_forced_close_then_the_model_thinks_again() -> None:
    # The engine appends "</think><answer>" at the budget; the model may keep reasoning, then close again.
    text = (
        "<think>first part</think><answer>second part</think><answer>Final: <|begin_of_box|>7<|end_of_box|>"
    )
    p = split_output(text + "</answer>")
    assert (p.answer, p.boxes) == ("Final: 7", ["7"])
    assert p.reasoning.split() == ["first", "part", "second", "part"]
    assert p.malformed


def test_duplicated_answer_keeps_the_first() -> None:
    p = split_output("<think>a</think><answer>b</answer><answer>c</answer>")
    assert p.answer == "b" and p.malformed
    assert p.flags == ["malformed_tags", "text_after_answer"]


@pytest.mark.parametrize(
    "text",
    [
        "<think>a</think><think>b</think><answer>c</answer>",
        "<answer>c</answer><think>a</think>",
        "<think>a</think><answer>b</answer><answer>c</answer>",
        "<think>a</think>b</answer>",
        "<think>a</think><answer>b</answer></answer>",
    ],
)
def test_repeated_out_of_order_or_unpaired_tags_are_malformed(text: str) -> None:
    p = split_output(text)
    assert p.malformed and "malformed_tags" in p.flags


def test_out_of_order_answer_first_is_not_invented() -> None:
    # The answer came before the reasoning: no answer follows </think>, so none is claimed.
    p = split_output("<answer>c</answer><think>a</think>")
    assert p.answer_missing and p.reasoning.split() == ["c", "a"]


def test_text_between_reasoning_and_answer_is_flagged() -> None:
    p = split_output("<think>a</think>So:<answer>b</answer>")
    assert p.answer == "b" and p.flags == ["text_before_answer"]


def test_box_markers_in_reasoning_are_stripped_and_empty_boxes_ignored() -> None:
    empty_box = "<|begin_of_box|><|end_of_box|>"
    p = split_output(f"<think>maybe <|begin_of_box|>3<|end_of_box|>?</think><answer>{empty_box}4</answer>")
    assert (p.reasoning, p.answer, p.boxes) == ("maybe 3?", "4", [])


def test_any_input_parses_without_tags_left_over() -> None:
    # Property check over random mixes of tags, markers and words: never raises, never leaks a tag.
    pieces = [*TAGS, BOX_OPEN, BOX_CLOSE, "<|endoftext|>", "<|user|>", " word ", "\n", "42"]
    rng = random.Random(7)
    for _ in range(2000):
        p = split_output("".join(rng.choice(pieces) for _ in range(rng.randint(0, 12))))
        for part in (p.reasoning, p.answer, *p.boxes):
            assert not any(tag in part for tag in (*TAGS, BOX_OPEN, BOX_CLOSE))
        assert p.answer_missing == (p.answer == "") and (not p.truncated or p.answer_missing)
        assert p.truncated == ("truncated" in p.flags) and p.malformed == ("malformed_tags" in p.flags)


# -- grounding: box text to coordinates -------------------------------------------------------------


def test_a_glm_box_maps_from_0_1000_to_the_page_pixels() -> None:
    (box,) = split_output(
        "<think>The button is low on the left.</think><answer>It is at "
        "<|begin_of_box|>[[94,598,177,991]]<|end_of_box|>.</answer>"
    ).boxes
    (region,) = regions(box, (911, 1288))
    assert region.normalized == (94, 598, 177, 991)
    # x = 94 / 1000 * 911 = 85.6 -> 86; y = 598 / 1000 * 1288 = 770.2 -> 770 ...
    assert region.box == (86, 770, 161, 1276)


def test_several_boxes_floats_spaces_and_swapped_corners() -> None:
    found = regions("[[10, 20, 30, 40], [ 500.5,500,250,100 ]]", (1000, 2000))
    assert [r.box for r in found] == [(10, 40, 30, 80), (250, 200, 500, 1000)]
    assert found[1].normalized == (500.5, 500, 250, 100)  # as written; the pixels are ordered


def test_coordinates_outside_0_1000_are_clamped_to_the_image() -> None:
    (r,) = regions("[[-5,0,1200,1000]]", (200, 100))
    assert r.box == (0, 0, 200, 100)


def test_boxes_without_coordinates_give_no_regions_and_unknown_image_gives_no_pixels() -> None:
    assert regions("42", (100, 100)) == []
    assert regions("[[1,2,3]]", (100, 100)) == []  # three numbers: not a box
    (r,) = regions("[[100,100,200,200]]", None)
    assert (r.normalized, r.box) == ((100, 100, 200, 200), None)
