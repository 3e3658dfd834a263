"""What `vlmq quantize` refuses before it loads anything, each with a message naming the problem."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jobs.errors import InvalidInput
from workers.quantization.awq_format import PACK


class QuantizeError(InvalidInput):
    code = "quantize_error"


def read_source_config(src: Path, group_size: int) -> dict[str, Any]:
    """SRC's config.json, once it is known to be an unquantized GLM-4.1V checkpoint AWQ can split into
    groups of ``group_size``."""
    config_path = src / "config.json"
    if not src.is_dir():
        raise QuantizeError(f"source {src} is not a folder (expected a GLM-4.1V checkpoint folder)")
    if not config_path.is_file():
        raise QuantizeError(f"source {src} has no config.json: not a transformers checkpoint")
    try:
        config = json.loads(config_path.read_text())
    except (ValueError, OSError) as e:
        raise QuantizeError(f"source {config_path} is not readable JSON: {e}") from e
    kind = config.get("model_type")
    if kind != "glm4v":
        raise QuantizeError(
            f"source {src} is a {kind or 'unknown'!s} checkpoint; vlmq quantize takes GLM-4.1V "
            "(model_type glm4v, Glm4vForConditionalGeneration)"
        )
    if config.get("quantization_config"):
        method = config["quantization_config"].get("quant_method", "some method")
        raise QuantizeError(f"source {src} is already quantized ({method}); start from the bf16 checkpoint")
    if not any(src.glob("*.safetensors")):
        raise QuantizeError(f"source {src} has no *.safetensors weights")
    _check_shapes(config.get("text_config") or {}, group_size)
    return config


def _check_shapes(text: dict[str, Any], group_size: int) -> None:
    """Every quantized linear's input size must divide into groups, and its output into int32 packs."""
    hidden, inter = text.get("hidden_size", 0), text.get("intermediate_size", 0)
    heads = text.get("num_attention_heads", 1)
    kv = text.get("num_key_value_heads", heads)
    head_dim = text.get("head_dim") or hidden // max(heads, 1)
    for what, size, mult in [
        ("hidden_size", hidden, group_size),
        ("intermediate_size", inter, group_size),
        ("key/value size", kv * head_dim, PACK),
    ]:
        if not size or size % mult:
            raise QuantizeError(f"text model {what} {size} is not a multiple of {mult}: AWQ cannot split it")


def check_destination(dst: Path) -> None:
    if dst.exists():
        raise QuantizeError(f"destination {dst} already exists; remove it or choose another path")
    if not dst.parent.is_dir():
        raise QuantizeError(f"destination's parent folder {dst.parent} does not exist")
