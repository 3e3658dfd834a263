"""Task presets: templates, versions, the user's prompt, the text hint."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from jobs.errors import InvalidInput
from jobs.prompts import presets
from jobs.schemas import JobCreate


def test_caption_and_ocr_use_their_template_or_the_users_whole_prompt() -> None:
    assert presets.resolve(None, None) == (presets.CAPTION.prompt, "caption-v1")
    assert presets.resolve("ocr", None) == (presets.OCR.prompt, "ocr-v1")
    text, version = presets.resolve("ocr", "Only the table, as CSV.")
    assert (text, version) == ("Only the table, as CSV.", presets.prompt_version("Only the table, as CSV."))
    assert version.startswith("custom-") and version != presets.prompt_version("other")


@pytest.mark.parametrize(("task", "version"), [("qa", "qa-v1"), ("grounding", "grounding-v1")])
def test_qa_and_grounding_put_the_users_text_into_their_template(task: str, version: str) -> None:
    text, got = presets.resolve(task, "  the total amount ")
    assert got == version  # the template's version: the question is data, not a new prompt
    assert "the total amount" in text and presets.SLOT not in text and text != "the total amount"
    with pytest.raises(InvalidInput, match="needs a prompt"):
        presets.resolve(task, None)
    with pytest.raises(InvalidInput, match="needs a prompt"):
        presets.resolve(task, "   ")


def test_grounding_asks_for_glm_boxes_in_0_1000() -> None:
    text, _ = presets.resolve("grounding", "the submit button")
    assert "<|begin_of_box|>[[x1,y1,x2,y2]]<|end_of_box|>" in text and "0-1000" in text


def test_every_preset_has_a_unique_version() -> None:
    versions = [p.version for p in presets.PRESETS.values()]
    assert len(set(versions)) == len(versions) == len(presets.TASKS) == 4


def test_text_hint_is_appended_and_cut() -> None:
    prompt, cut = presets.with_text_hint("Describe.", "Total 42", 100)
    assert prompt.startswith("Describe.") and prompt.endswith('"""\nTotal 42\n"""') and not cut
    prompt, cut = presets.with_text_hint("Describe.", "x" * 500, 100)
    assert cut and "x" * 100 + "\n[...]" in prompt and "x" * 101 not in prompt


def _job(**kw: object) -> JobCreate:
    items = kw.pop("items", [{"custom_id": "a", "uri": "s3://b/a.pdf"}])
    return JobCreate.model_validate({"items": items, **kw})


def test_submissions_for_qa_need_a_question_somewhere() -> None:
    _job(prompt="What is the total?", options={"task": "qa"})
    _job(items=[{"custom_id": "a", "uri": "s3://b/a.pdf", "prompt": "Total?"}], options={"task": "qa"})
    with pytest.raises(ValidationError, match=r"needs a prompt .* none for: a"):
        _job(options={"task": "grounding"})
    with pytest.raises(ValidationError, match="task"):
        _job(options={"task": "summarise"})


def test_options_are_checked_at_submission() -> None:
    opts = _job(options={"pages": "1-3,7", "dpi": 150, "granularity": "document", "text_hint": True}).options
    assert (opts.pages, opts.dpi, opts.granularity) == ("1-3,7", 150, "document")
    with pytest.raises(ValidationError, match="bad page range '3-1'"):
        _job(options={"pages": "3-1"})
    with pytest.raises(ValidationError, match="longest_side or dpi, not both"):
        _job(options={"dpi": 150, "longest_side": 800})
    item = {"custom_id": "a", "uri": "s3://b/a.pdf", "options": {"pages": "2", "password": "pw"}}
    parsed = _job(items=[item]).items[0].options
    assert parsed is not None and (parsed.pages, parsed.password) == ("2", "pw")
    assert "pw" not in repr(parsed)  # the password never shows in a repr or a log line
