"""`vlmq quantize`: a bf16 GLM-4.1V checkpoint in, an AWQ 4-bit (gemm, group 128) checkpoint out.

The model stays in host memory; the calibration forward pass and then one decoder layer at a time
move to the device, so the GPU holds one layer and its calibration activations, not the model
(peak GPU memory is reported). Only the text decoder's linear layers are quantized: the vision tower,
the embeddings, the norms and ``lm_head`` are stored in float16, as in the published AWQ checkpoint.
The output is written to ``DST.partial`` and renamed into place once complete.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from workers.inference.prompts import build_messages
from workers.quantization.awq_format import GROUP_SIZE, quantization_config
from workers.quantization.awq_search import LayerInput, quantize_layer
from workers.quantization.calibration import CalibrationPage
from workers.quantization.checks import QuantizeError, check_destination, read_source_config
from workers.quantization.loading import glm4v_config

log = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]  # (stage, done, total)
WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pt", "*.pth", "model.safetensors.index.json", "config.json")
META_FILE = "vlmq-quantize.json"


@dataclass(frozen=True)
class QuantizeReport:
    source: str
    destination: str
    device: str
    samples: int
    tokens: int
    layers: int
    seconds: float
    output_bytes: int
    peak_gpu_bytes: int | None  # torch.cuda.max_memory_allocated; None on CPU


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise QuantizeError(f"device {device} asked for, but torch sees no CUDA GPU")
    return torch.device(device)


def quantize_checkpoint(
    src: Path,
    dst: Path,
    pages: list[CalibrationPage],
    *,
    device: str = "auto",
    group_size: int = GROUP_SIZE,
    progress: Progress | None = None,
) -> QuantizeReport:
    read_source_config(src, group_size)
    check_destination(dst)
    if not pages:
        raise QuantizeError("empty calibration set: give at least one page")
    dev, report = resolve_device(device), progress or (lambda *_: None)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.monotonic()
    model, processor = _load(src, dev)
    inputs = _layer_inputs(model, processor, pages, dev, report)
    tokens = sum(x.hidden.shape[1] for x in inputs)
    packed = _quantize_layers(model, inputs, dev, group_size, report)
    del inputs
    peak = torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else None
    size = _write(model, packed, src, dst, group_size)
    meta = QuantizeReport(
        str(src), str(dst), str(dev), len(pages), tokens, len(_layers(model)),
        round(time.monotonic() - t0, 1), size, peak,
    )  # fmt: skip
    (dst / META_FILE).write_text(json.dumps({**asdict(meta), "pages": [p.name for p in pages]}, indent=1))
    return meta


def _load(src: Path, dev: torch.device) -> tuple[Any, Any]:
    from transformers import AutoProcessor, Glm4vForConditionalGeneration

    # bf16 on a GPU (the checkpoint's own precision); float32 on a CPU, where bf16 matmuls are slow.
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    model = Glm4vForConditionalGeneration.from_pretrained(
        src, config=glm4v_config(src), local_files_only=True, dtype=dtype
    )
    return model.eval(), AutoProcessor.from_pretrained(src, local_files_only=True)


def _layers(model: Any) -> Any:
    return model.model.language_model.layers


class _Captured(Exception):
    """Raised from the first decoder layer's hook: the rest of the forward pass is not needed."""


@torch.no_grad()
def _layer_inputs(
    model: Any, processor: Any, pages: list[CalibrationPage], dev: torch.device, report: Progress
) -> list[LayerInput]:
    """Each page through the vision tower and the embeddings, up to the first decoder layer's input."""
    captured: list[LayerInput] = []

    def hook(_mod: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        kw = dict(kwargs)
        hidden = args[0] if args else kw.pop("hidden_states")
        captured.append(LayerInput(hidden, kw))
        raise _Captured

    core = model.model
    handle = _layers(model)[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with _on(dev, core.visual, core.language_model.embed_tokens, core.language_model.rotary_emb):
            for i, page in enumerate(pages):
                with suppress(_Captured):
                    core(**_encode(processor, page, dev), use_cache=False)
                report("calibration pages", i + 1, len(pages))
    finally:
        handle.remove()
    return captured


def _encode(processor: Any, page: CalibrationPage, dev: torch.device) -> Any:
    inputs = processor.apply_chat_template(
        build_messages(page.prompt, [page.image]), add_generation_prompt=True, tokenize=True,
        return_dict=True, return_tensors="pt",
    )  # fmt: skip
    return inputs.to(dev)


@contextmanager
def _on(dev: torch.device, *modules: Any) -> Iterator[None]:
    for m in modules:
        m.to(dev)
    try:
        yield
    finally:
        for m in modules:
            m.to("cpu")


def _quantize_layers(
    model: Any, inputs: list[LayerInput], dev: torch.device, group_size: int, report: Progress
) -> dict[str, torch.Tensor]:
    names = {id(m): n for n, m in model.named_modules()}
    layers, packed = _layers(model), {}
    for i, layer in enumerate(layers):
        with _on(dev, layer):
            tensors, inputs = quantize_layer(layer, inputs, group_size)
        packed.update({f"{names[id(layer)]}.{k}": v for k, v in tensors.items()})
        report("decoder layers", i + 1, len(layers))
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return packed


def _write(model: Any, packed: dict[str, torch.Tensor], src: Path, dst: Path, group_size: int) -> int:
    """Weights (float16 beside the packed layers), config and SRC's other files; returns the bytes."""
    from huggingface_hub import split_torch_state_dict_into_shards

    tmp = dst.with_name(dst.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    state = _float_state(model, packed)
    split = split_torch_state_dict_into_shards(state, max_shard_size="5GB")
    for filename, keys in split.filename_to_tensors.items():
        save_file({k: state[k] for k in keys}, str(tmp / filename), metadata={"format": "pt"})
    if split.is_sharded:
        total = sum(t.numel() * t.element_size() for t in state.values())
        index = {"metadata": {"total_size": total}, "weight_map": split.tensor_to_filename}
        (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))
    config = model.config
    config.quantization_config = quantization_config(group_size)
    # vLLM's AWQ kernels compute in float16, and the float weights are stored so; every sub-config
    # says so too, whichever one a loader reads its dtype from.
    for c in (config, config.text_config, config.vision_config):
        c.dtype = torch.float16
    config.save_pretrained(tmp)
    _copy_other_files(src, tmp)
    tmp.rename(dst)
    return sum(f.stat().st_size for f in dst.iterdir() if f.is_file())


def _float_state(model: Any, packed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    prefixes = {k.rsplit(".", 1)[0] for k in packed}
    state = {
        k: (v.half() if v.is_floating_point() else v).contiguous().cpu()
        for k, v in model.state_dict().items()
        if k.rsplit(".", 1)[0] not in prefixes
    }
    return {**state, **packed}


def _copy_other_files(src: Path, dst: Path) -> None:
    """Tokenizer, processor, chat template, generation config: everything but weights and config."""
    for f in src.iterdir():
        if f.is_file() and not any(f.match(p) for p in WEIGHT_FILES):
            shutil.copy2(f, dst / f.name)
