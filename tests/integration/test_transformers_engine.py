"""The CPU engine on the real GLM-4.1V architecture (tiny, random or taught weights)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from jobs.prompts.reasoning import split_output
from tests.fixtures.models import TARGETS, taught_pages
from workers.inference.engine import GenerationRequest
from workers.inference.prompts import DEFAULT_PROMPT, build_messages
from workers.inference.tiny_model import MIN_MARGIN, SPECIAL_TOKENS, TEXT_TAGS, teach
from workers.inference.transformers_engine import TransformersEngine

pytestmark = pytest.mark.slow

GLM_IDS = {
    "<|endoftext|>": 151329, "[gMASK]": 151331, "<sop>": 151333, "<|user|>": 151336,
    "<|assistant|>": 151337, "<|observation|>": 151338, "<|begin_of_image|>": 151339,
    "<|end_of_image|>": 151340, "<|image|>": 151343, "<|video|>": 151344,
}  # fmt: skip
ONE_PAGE_TARGET = "<think>The page shows a title.</think><answer>Page 1: Quarterly report</answer>"


def page(colour: tuple[int, int, int], title: str, side: int = 448) -> Image.Image:
    """A portrait page (A4 proportions) with a coloured banner and a title."""
    width = round(side * 595 / 842)
    img = Image.new("RGB", (width, side), "white")
    draw = ImageDraw.Draw(img)
    draw.rectangle((width // 15, side // 20, width - width // 15, side // 3), fill=colour)
    draw.text((width // 8, side // 2), title, fill="black")
    return img


@pytest.fixture(scope="module")
def random_engine(tiny_model_dir: Path) -> TransformersEngine:
    return TransformersEngine(str(tiny_model_dir), "tiny")


def test_saved_tokenizer_keeps_glm_ids(random_engine: TransformersEngine) -> None:
    tok = random_engine.processor.tokenizer
    assert {t: tok.convert_tokens_to_ids(t) for t in GLM_IDS} == GLM_IDS
    ids = tok.convert_tokens_to_ids(SPECIAL_TOKENS + TEXT_TAGS)
    assert ids == list(range(151329, 151329 + len(ids)))
    text = "<think>héllo 世界</think><answer>x <|begin_of_box|>1<|end_of_box|></answer>"
    # Byte-level: any text round-trips. The tags are not special, so skipping specials keeps them.
    assert tok.decode(tok(text + "<|endoftext|>").input_ids, skip_special_tokens=True) == text


def test_chat_template_is_glm4v_shaped(random_engine: TransformersEngine) -> None:
    text = random_engine.processor.apply_chat_template(
        build_messages("Describe.", 1), add_generation_prompt=True
    )
    assert text == "[gMASK]<sop><|user|>\n<|begin_of_image|><|image|><|end_of_image|>Describe.<|assistant|>\n"


def test_random_weights_generate_real_tokens(random_engine: TransformersEngine) -> None:
    img = page((30, 60, 180), "Quarterly report")  # 448 x 316: resized to 448 x 308, 16 x 11 merged patches
    (out,) = random_engine.generate([GenerationRequest("r1", "Describe.", [img], max_new_tokens=16)])
    processor = random_engine.processor
    text = processor.apply_chat_template(build_messages("Describe.", 1), add_generation_prompt=True)
    n_text = len(processor.tokenizer(text).input_ids) - 1  # all but the one <|image|> placeholder
    assert out.request_id == "r1"
    assert out.prompt_tokens == n_text + 16 * 11
    assert 0 < out.completion_tokens <= 16
    assert out.finish_reason == ("length" if out.completion_tokens == 16 else "stop")
    assert out.text and "<|endoftext|>" not in out.text


def test_teach_one_page_makes_its_answer_exact(tiny_model_dir: Path, tmp_path: Path) -> None:
    model_dir = Path(shutil.copytree(tiny_model_dir, tmp_path / "taught"))
    taught, unseen = page((30, 60, 180), "Quarterly report"), page((230, 150, 25), "Invoice 42")
    figures = teach(model_dir, [(taught, DEFAULT_PROMPT, ONE_PAGE_TARGET)], steps=80)
    assert figures["margin"] >= MIN_MARGIN and figures["steps"] < 80
    engine = TransformersEngine(str(model_dir), "taught")
    out, cut, other = engine.generate(
        [
            GenerationRequest("a", DEFAULT_PROMPT, [taught], max_new_tokens=128),
            GenerationRequest("b", DEFAULT_PROMPT, [taught], max_new_tokens=4),
            GenerationRequest("c", DEFAULT_PROMPT, [unseen], max_new_tokens=128),
        ]
    )
    assert (out.text, out.finish_reason) == (ONE_PAGE_TARGET, "stop")
    assert out.completion_tokens == len(engine.processor.tokenizer(ONE_PAGE_TARGET).input_ids) + 1
    assert (cut.text, cut.completion_tokens, cut.finish_reason) == ("<think>The", 4, "length")
    assert other.text != ONE_PAGE_TARGET  # one taught page: nothing tells the model how to answer others


def test_taught_model_answers_its_pages_and_breaks_on_others(taught_model_dir: Path) -> None:
    engine = TransformersEngine(str(taught_model_dir), "taught")
    pages = taught_pages()
    reqs = [GenerationRequest(str(i), DEFAULT_PROMPT, [p], max_new_tokens=64) for i, p in enumerate(pages)]
    outs = engine.generate(reqs)
    assert [o.text for o in outs[:2]] == TARGETS
    assert all(o.finish_reason == "stop" for o in outs[:2])
    assert split_output(outs[1].text).boxes == ["42"]
    assert outs[2].text not in TARGETS  # a page it never saw: whatever comes, it is not a taught answer
