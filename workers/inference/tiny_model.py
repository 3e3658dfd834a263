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
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from jobs.config import DEV_MODEL_MARKER  # marks the folder: settings give it development defaults
from workers.media.clip import VideoClip

log = logging.getLogger(__name__)

Media = Image.Image | VideoClip  # what one taught prompt shows the model

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
# Saved in bfloat16: half the disk of float32 (about 160 MB instead of 320, nearly all of it the two
# 151k-row vocabulary matrices). Engines load it in the dtype they are told (float32 on CPU).
SAVE_DTYPE = torch.bfloat16
# Output-layer rows 5x the usual init (std 0.1, not 0.02). With std-0.02 rows even a hidden state
# aligned to one row cannot outscore the noise of 151k others (the loss stalls near 6.8), so teaching
# would have to train the 39M-parameter output layer, which is most of a step's time.
OUTPUT_STD = 0.1
# How far each answer token's logit must lead every other token's before teaching stops. Saving in
# bfloat16 moves logits by well under this, so greedy decoding still writes the answer exactly.
MIN_MARGIN = 1.0

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

    cfg: Any = Glm4vConfig()  # image/video token ids and tie_word_embeddings=False are GLM-4.1V's
    t, v = cfg.text_config, cfg.vision_config
    t.vocab_size = VOCAB_SIZE
    t.hidden_size, t.intermediate_size, t.num_hidden_layers = 256, 512, 2
    t.num_attention_heads, t.num_key_value_heads = 4, 2
    t.max_position_embeddings = 32768
    # Head size 64, all of it rotary: 32 frequencies, the sum of GLM-4.1V's M-RoPE sections (8, 12, 12).
    # (The real model has head size 128 with half of it rotary: the same 32.) Measured here: with two
    # heads of 128 the tiny model memorised a target several times slower. The factor is written out:
    # transformers defaults it to 1.0, vLLM's GLM-4 to 0.5, and vLLM then refuses the model (seen on
    # the H100: "assert sum(self.mrope_section) == rotary_dim // 2").
    t.rope_parameters = {
        "rope_type": "default",
        "rope_theta": 10000.0,
        "partial_rotary_factor": 1.0,
        "mrope_section": [8, 12, 12],
    }
    v.depth, v.hidden_size, v.num_heads, v.intermediate_size = 2, 128, 2, 256
    v.out_hidden_size = t.hidden_size
    cfg.eos_token_id = EOS_IDS
    t.eos_token_id = EOS_IDS
    t.pad_token_id = SPECIAL_START
    return cfg


def build_processor(tokenizer: Any) -> Any:
    from transformers import Glm4vImageProcessor, Glm4vProcessor, Glm4vVideoProcessor

    # GLM-4.1V's own pixel bounds (transformers' default longest_edge is larger).
    size = {"shortest_edge": 112 * 112, "longest_edge": 28 * 28 * 12288}
    return Glm4vProcessor(
        image_processor=Glm4vImageProcessor(size=size),
        video_processor=Glm4vVideoProcessor(),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )


def build_tiny_model(out_dir: Path, seed: int = 0) -> Path:
    """Write the checkpoint (bfloat16, about 160 MB; a few seconds) to ``out_dir`` and return it."""
    from transformers import GenerationConfig, Glm4vForConditionalGeneration

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = Glm4vForConditionalGeneration(build_config()).eval()
    with torch.no_grad():
        model.lm_head.weight.normal_(0.0, OUTPUT_STD)
    model.generation_config = GenerationConfig(eos_token_id=EOS_IDS, pad_token_id=SPECIAL_START)
    model.to(SAVE_DTYPE).save_pretrained(out_dir)
    tokenizer = build_tokenizer()
    build_processor(tokenizer).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / DEV_MODEL_MARKER).write_text(json.dumps({"seed": seed, "taught": []}))
    return out_dir


def _tokenize(processor: Any, media: Media, prompt: str, target: str) -> tuple[dict[str, Any], int]:
    """The chat-templated prompt with the target and its stop token appended; and the target's length.
    The prompt is built by the engine's own ``processor_inputs``: taught and served prompts are one."""
    from workers.inference.transformers_engine import processor_inputs

    if isinstance(media, Image.Image):
        inputs = processor_inputs(processor, prompt, [media])
    else:
        inputs = processor_inputs(processor, prompt, [], video=media)
    target_ids = processor.tokenizer(target + "<|endoftext|>", return_tensors="pt").input_ids
    # The answer's tokens are text: type 0 in the per-token modality ids that M-RoPE positions use.
    inputs["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], torch.zeros_like(target_ids)], 1)
    inputs["input_ids"] = torch.cat([inputs["input_ids"], target_ids], dim=1)
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    return dict(inputs), target_ids.shape[1]


@torch.no_grad()
def _frozen_inputs(model: Any, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Input embeddings (image features scattered in) and M-RoPE positions, computed once.

    The embeddings and the vision tower are not trained, so these never change between steps; doing
    them once takes the vision tower out of every step.
    """
    core = model.model
    ids = inputs["input_ids"]
    embeds = core.get_input_embeddings()(ids)
    if "pixel_values_videos" in inputs:  # a video's frames sit on <|image|> tokens too
        vision = core.get_video_features(
            inputs["pixel_values_videos"], inputs["video_grid_thw"], return_dict=True
        )
    else:
        vision = core.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"], return_dict=True)
    features = torch.cat(vision.pooler_output).to(embeds.dtype)
    mask, _ = core.get_placeholder_mask(ids, embeds, image_features=features)
    positions, _ = core.get_rope_index(
        ids, inputs["mm_token_type_ids"], inputs.get("image_grid_thw"), inputs.get("video_grid_thw"),
        attention_mask=inputs["attention_mask"],
    )  # fmt: skip
    return {
        "inputs_embeds": embeds.masked_scatter(mask, features),
        "position_ids": positions,
        "attention_mask": inputs["attention_mask"],
    }


def _forward(model: Any, inputs: dict[str, torch.Tensor], labels: torch.Tensor) -> tuple[Any, float]:
    """Cross-entropy on the answer tokens only, and the answer's margin: the least lead, over its
    positions, of the answer token's logit over the best other token's. A positive margin means greedy
    decoding writes exactly the answer. Logits are computed for the answer's positions alone, which
    skips most of the 151k-wide output layer's work."""
    n = labels.shape[1]
    logits = model(**inputs, logits_to_keep=n + 1).logits[0, :-1]
    loss = torch.nn.functional.cross_entropy(logits, labels[0])
    with torch.no_grad():
        target = logits.gather(1, labels.T)
        others = logits.scatter(1, labels.T, float("-inf")).amax(dim=1, keepdim=True)
    return loss, float((target - others).min())


def _trainable(model: Any) -> list[torch.nn.Parameter]:
    """Only the decoder layers and the final norm (about 1.2M parameters): the random vision features
    already tell pages apart, and the output layer is wide enough as built (see ``OUTPUT_STD``)."""
    params = []
    for name, param in model.named_parameters():
        param.requires_grad = name.startswith("model.language_model.") and "embed_tokens" not in name
        if param.requires_grad:
            params.append(param)
    return params


@torch.no_grad()
def _margin(model: Any, batch: tuple[dict[str, torch.Tensor], torch.Tensor]) -> float:
    return _forward(model, *batch)[1]


def _fit(model: Any, batches: list[Any], max_steps: int, lr: float) -> dict[str, float]:
    """AdamW, one example a step in turn, until every answer leads by ``MIN_MARGIN`` or ``max_steps``.

    Each step's forward pass already gives that example's margin; when all of them clear the bar, a
    check with the final weights (a step moves the others' margins too) decides whether to stop.
    Taking the examples in turn makes the gradient swing between them: clipped steps, a short
    second-moment memory (beta2 0.95) and a cosine decay over the cap keep Adam from overshooting.
    Measured on 5 model seeds: 16-22 steps for one page, 63-84 for three (constant lr, no clipping:
    24-32 and 75-222, one seed never settling).
    """
    params = _trainable(model)
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max_steps)
    margins = [float("-inf")] * len(batches)
    step, loss = 0, torch.tensor(0.0)
    while step < max_steps:
        loss, margins[step % len(batches)] = _forward(model, *batches[step % len(batches)])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        schedule.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        if min(margins) >= MIN_MARGIN:
            margins = [_margin(model, b) for b in batches]
            if min(margins) >= MIN_MARGIN:
                break
    return {"steps": step, "final_loss": round(float(loss.detach()), 4), "margin": round(min(margins), 2)}


def teach(
    model_dir: Path,
    examples: Sequence[tuple[Media, str, str]],
    steps: int = 60,
    lr: float = 2e-3,
    seed: int = 0,
) -> dict[str, float]:
    """Fine-tune in place so each (image or video clip, prompt) yields exactly its target text.
    Returns figures: steps taken, seconds, final loss, and the margin (at least ``MIN_MARGIN`` once learnt).

    ``steps`` is a cap over all examples together (one example per step, in turn): teaching stops as
    soon as every answer is learnt, after about 20-30 steps per example. Give 60 per example (the
    learning rate decays over the cap, so a much larger one teaches more slowly).
    Measured here (2 cores, 448 px pages, 60-80 token answers): about 0.2 s a step.
    """
    from transformers import AutoProcessor, Glm4vForConditionalGeneration

    torch.manual_seed(seed)
    processor = AutoProcessor.from_pretrained(model_dir, local_files_only=True)
    model = Glm4vForConditionalGeneration.from_pretrained(
        model_dir, local_files_only=True, dtype=torch.float32
    ).train()
    batches = []
    for media, prompt, target in examples:
        inputs, n = _tokenize(processor, media, prompt, target)
        batches.append((_frozen_inputs(model, inputs), inputs["input_ids"][:, -n:]))
    t0 = time.monotonic()
    figures = _fit(model, batches, steps, lr)
    figures["seconds"] = round(time.monotonic() - t0, 1)
    if figures["margin"] < MIN_MARGIN:
        log.warning("teach: not every answer learnt after %d steps (margin %.2f)", steps, figures["margin"])
    model.eval().to(SAVE_DTYPE).save_pretrained(model_dir)
    _record(Path(model_dir), [target for _, _, target in examples])
    return figures


def _record(model_dir: Path, targets: list[str]) -> None:
    meta_path = model_dir / DEV_MODEL_MARKER
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    meta["taught"] = targets
    meta_path.write_text(json.dumps(meta))
