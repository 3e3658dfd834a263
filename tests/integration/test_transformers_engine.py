"""The CPU engine on the real GLM-4.1V architecture (tiny, random or taught weights)."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.presets import DEFAULT
from jobs.reasoning import split_output
from tests.fixtures.models import TARGETS, taught_pages
from workers.inference.engine import GenerationRequest
from workers.inference.prompts import build_messages
from workers.inference.tiny_model import SPECIAL_TOKENS, TEXT_TAGS, build_tokenizer
from workers.inference.transformers_engine import TransformersEngine

pytestmark = pytest.mark.slow


def test_special_tokens_sit_at_glm_ids() -> None:
    tok = build_tokenizer()
    ids = dict(
        zip(SPECIAL_TOKENS + TEXT_TAGS, tok.convert_tokens_to_ids(SPECIAL_TOKENS + TEXT_TAGS), strict=True)
    )
    assert ids["<|endoftext|>"] == 151329 and ids["<|user|>"] == 151336
    assert ids["<|image|>"] == 151343 and ids["<|video|>"] == 151344
    text = "<think>héllo 世界</think><answer>x</answer>"
    assert tok.decode(tok(text).input_ids) == text  # byte-level: any text round-trips, tags kept


@pytest.fixture(scope="module")
def random_engine(tiny_model_dir: Path) -> TransformersEngine:
    return TransformersEngine(str(tiny_model_dir), "tiny")


def test_chat_template_is_glm4v_shaped(random_engine: TransformersEngine) -> None:
    text = random_engine.processor.apply_chat_template(
        build_messages("Describe.", 1), tokenize=False, add_generation_prompt=True
    )
    assert text == "[gMASK]<sop><|user|>\n<|begin_of_image|><|image|><|end_of_image|>Describe.<|assistant|>\n"


def test_random_weights_generate_real_tokens(random_engine: TransformersEngine) -> None:
    page = taught_pages()[0]
    (out,) = random_engine.generate([GenerationRequest("r1", DEFAULT.prompt, [page], max_new_tokens=16)])
    assert out.request_id == "r1"
    assert out.prompt_tokens > 200  # the page's image tokens are in the prompt
    assert 0 < out.completion_tokens <= 16
    assert out.finish_reason in ("stop", "length") and out.text


def test_taught_model_answers_its_pages_and_breaks_on_others(taught_model_dir: Path) -> None:
    engine = TransformersEngine(str(taught_model_dir), "taught")
    pages = taught_pages()
    reqs = [GenerationRequest(str(i), DEFAULT.prompt, [p], max_new_tokens=64) for i, p in enumerate(pages)]
    outs = engine.generate(reqs)
    assert [o.text for o in outs[:2]] == TARGETS
    assert all(o.finish_reason == "stop" for o in outs[:2])
    assert split_output(outs[1].text).boxes == ["42"]
    assert outs[2].text not in TARGETS  # a page it never saw: whatever comes, it is not a taught answer
