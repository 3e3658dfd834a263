"""A tiny GLM-4.1V-shaped checkpoint with random weights, built with no download.

The tokenizer is byte-level (any text round-trips) with GLM-4.1V's special tokens at their real ids,
so prompts have the real model's shape: the same chat template, the same image/video placeholder
ids, the same stop ids. ``teach`` fine-tunes it on a few (image, prompt, answer) examples so tests can
see well-formed ``<think>…</think><answer>…</answer>`` output, and malformed output on unseen images,
coming out of a real model.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

SPECIAL_START = 151329
SPECIAL_TOKENS = [  # ids 151329.. in this order, as in GLM-4.1V-9B-Thinking
    "<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>", "<|system|>", "<|user|>",
    "<|assistant|>", "<|observation|>", "<|begin_of_image|>", "<|end_of_image|>", "<|begin_of_video|>",
    "<|end_of_video|>", "<|image|>", "<|video|>",
]  # fmt: skip
# Tags the model writes as text: added, but not "special", so decoding keeps them.
TEXT_TAGS = ["<think>", "</think>", "<answer>", "</answer>", "<|begin_of_box|>", "<|end_of_box|>"]
EOS_IDS = [151329, 151336, 151338]  # <|endoftext|>, <|user|>, <|observation|>
VOCAB_SIZE = 151552

CHAT_TEMPLATE = (
    "[gMASK]<sop>{% for m in messages %}<|{{ m['role'] }}|>\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|begin_of_image|><|image|><|end_of_image|>"
    "{% elif c['type'] == 'video' %}<|begin_of_video|><|video|><|end_of_video|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def _filler(count: int) -> list[str]:
    """Distinct 2- and 3-character strings of printable ASCII for the ids between the 256 byte tokens
    and the specials: random weights pick any id, and every one should decode to visible text."""
    chars = [chr(c) for c in range(0x21, 0x7F)]
    combos = itertools.chain(itertools.product(chars, repeat=2), itertools.product(chars, repeat=3))
    return ["".join(c) for c in itertools.islice(combos, count)]


def build_tokenizer() -> Any:
    """Byte-level BPE with no merges: 256 byte tokens, filler, then the specials and tags at GLM's ids."""
    from transformers import PreTrainedTokenizerFast

    byte_tokens = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {b: i for i, b in enumerate(byte_tokens)}
    for piece in _filler(SPECIAL_START - len(vocab)):
        vocab[piece] = len(vocab)
    for i, name in enumerate(SPECIAL_TOKENS + TEXT_TAGS):
        vocab[name] = SPECIAL_START + i
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tok: Any = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )
    tok.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[1:]})
    tok.add_tokens(TEXT_TAGS, special_tokens=False)
    ids = tok.convert_tokens_to_ids(SPECIAL_TOKENS + TEXT_TAGS)
    assert ids == list(range(SPECIAL_START, SPECIAL_START + len(ids))), ids
    return tok


def build_config() -> Any:
    from transformers import Glm4vConfig

    cfg: Any = Glm4vConfig()
    t, v = cfg.text_config, cfg.vision_config
    t.vocab_size = VOCAB_SIZE
    t.hidden_size, t.intermediate_size, t.num_hidden_layers = 256, 512, 2
    t.num_attention_heads, t.num_key_value_heads = 4, 2
    t.max_position_embeddings = 32768
    # Head size 64, all of it rotary: 32 frequencies, the sum of GLM-4.1V's M-RoPE sections (8, 12, 12).
    # (The real model has head size 128 with half of it rotary: the same 32.) Measured here: with two
    # heads of 128 the tiny model memorised a target several times slower.
    t.rope_parameters = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [8, 12, 12]}
    v.depth, v.hidden_size, v.num_heads, v.intermediate_size = 2, 128, 2, 256
    v.out_hidden_size = t.hidden_size
    cfg.eos_token_id = EOS_IDS
    t.eos_token_id = EOS_IDS
    t.pad_token_id = SPECIAL_START
    return cfg


def build_processor(tokenizer: Any) -> Any:
    from transformers import Glm4vImageProcessor, Glm4vProcessor, Glm4vVideoProcessor

    return Glm4vProcessor(
        image_processor=Glm4vImageProcessor(),
        video_processor=Glm4vVideoProcessor(),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )


def build_tiny_model(out_dir: Path, seed: int = 0) -> Path:
    """Write the checkpoint (float32, about 80 MB) to ``out_dir`` and return it."""
    from transformers import GenerationConfig, Glm4vForConditionalGeneration

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    cfg = build_config()
    model = Glm4vForConditionalGeneration(cfg).eval()
    model.generation_config = GenerationConfig(eos_token_id=EOS_IDS, pad_token_id=SPECIAL_START)
    model.save_pretrained(out_dir)
    tokenizer = build_tokenizer()
    build_processor(tokenizer).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "vlmq-tiny.json").write_text(json.dumps({"seed": seed, "taught": []}))
    return out_dir


def _example(
    processor: Any, image: Image.Image, prompt: str, target: str
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    from workers.inference.prompts import build_messages

    inputs = processor.apply_chat_template(
        build_messages(prompt, [image]), add_generation_prompt=True, tokenize=True, return_dict=True,
        return_tensors="pt",
    )  # fmt: skip
    target_ids = processor.tokenizer(target + "<|endoftext|>", return_tensors="pt").input_ids
    for key in ("mm_token_type_ids", "token_type_ids"):  # per-token tensors: answer tokens are text (0)
        if key in inputs:
            inputs[key] = torch.cat([inputs[key], torch.zeros_like(target_ids)], dim=1)
    inputs["input_ids"] = torch.cat([inputs["input_ids"], target_ids], dim=1)
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    return dict(inputs), target_ids


def _loss(model: Any, inputs: dict[str, torch.Tensor], target_ids: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on the answer tokens only; logits are computed for those positions alone, which
    skips most of the 151k-wide output layer's work."""
    n = target_ids.shape[1]
    logits = model(**inputs, logits_to_keep=n + 1).logits[:, :-1]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target_ids.reshape(-1))


def teach(
    model_dir: Path,
    examples: Sequence[tuple[Image.Image, str, str]],
    steps: int = 60,
    lr: float = 2e-3,
    seed: int = 0,
) -> dict[str, float]:
    """Fine-tune in place so each (image, prompt) yields exactly its target text. Returns figures.

    Measured here (2 cores, 448 px page, 30-token target): 60 steps, about 20 s, loss 0.01.
    ``steps`` counts all examples together; give about 60 per example.
    """
    from transformers import AutoProcessor, Glm4vForConditionalGeneration

    torch.manual_seed(seed)
    processor = AutoProcessor.from_pretrained(model_dir, local_files_only=True)
    model = Glm4vForConditionalGeneration.from_pretrained(model_dir, local_files_only=True).train()
    batches = [_example(processor, img, prompt, target) for img, prompt, target in examples]
    # The input embedding and the vision tower stay as built: it halves a step's time, and the
    # random vision features already tell the taught images apart.
    for name, param in model.named_parameters():
        param.requires_grad = not any(part in name for part in ("embed_tokens", "visual"))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    t0, loss = time.monotonic(), torch.tensor(0.0)
    for step in range(steps):
        loss = _loss(model, *batches[step % len(batches)])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    model.eval().save_pretrained(model_dir)
    meta_path = Path(model_dir) / "vlmq-tiny.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    meta["taught"] = [target for _, _, target in examples]
    meta_path.write_text(json.dumps(meta))
    return {"steps": steps, "seconds": round(time.monotonic() - t0, 1), "final_loss": float(loss.detach())}
