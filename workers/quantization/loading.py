"""Load a GLM-4.1V checkpoint into transformers, AWQ ones included, with no AWQ kernels.

transformers 5.17 runs AWQ checkpoints only through gptqmodel, and no gptqmodel release fits this
project: the ones for transformers 5.14-5.19 pin numpy==2.2.6, the newer ones need transformers
>= 5.20. So the CPU engine reads an AWQ checkpoint by unpacking its 4-bit weights into ordinary float
weights at load time: the same numbers vLLM's kernels compute with, at float memory and speed. That is
what development and CI need (the quantized model's answers on CPU), not a way to serve it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from workers.quantization.awq_format import from_gemm

log = logging.getLogger(__name__)
DEFAULT_MROPE_SECTION = (8, 12, 12)  # transformers' and vLLM's, when a config names none


def is_awq(model_path: str | Path) -> bool:
    config = Path(model_path) / "config.json"
    if not config.is_file():
        return False
    qc = json.loads(config.read_text()).get("quantization_config") or {}
    return bool(qc.get("quant_method") == "awq")


def glm4v_config(model_path: str | Path) -> Any:
    """The checkpoint's config, its rotary size made to agree with its M-RoPE sections.

    GLM-4.1V rotates half of each 128-wide head: 64 dimensions, 32 frequencies, split (8, 12, 12)
    between time, height and width. vLLM assumes that half when a config does not say it; transformers
    5.17 assumes all of the head, and then fails in the first forward pass ("split_sizes to sum exactly
    to 64 ... [8, 12, 12]"). A config built from transformers' own ``Glm4vConfig()`` defaults says
    nothing, so the factor is set to what the sections imply, as vLLM does."""
    from transformers import AutoConfig

    config: Any = AutoConfig.from_pretrained(model_path, local_files_only=True)
    text = config.text_config
    rope = dict(text.rope_parameters or {})
    sections = rope.get("mrope_section") or DEFAULT_MROPE_SECTION
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    factor = 2 * sum(sections) / head_dim
    if int(head_dim * rope.get("partial_rotary_factor", 1.0)) != 2 * sum(sections) and 0 < factor <= 1:
        log.warning("config gives no rotary size for its M-RoPE sections %s: rotating %s of each head",
                    sections, factor)  # fmt: skip
        text.rope_parameters = {**rope, "partial_rotary_factor": factor}
    return config


def load_glm4v(model_path: str | Path, dtype: torch.dtype) -> Any:
    """Glm4vForConditionalGeneration from a float or an AWQ (gemm) checkpoint."""
    from transformers import Glm4vForConditionalGeneration

    if not is_awq(model_path):
        return Glm4vForConditionalGeneration.from_pretrained(
            model_path, config=glm4v_config(model_path), local_files_only=True, dtype=dtype
        )
    return _load_dequantized(Path(model_path), dtype)


def _load_dequantized(path: Path, dtype: torch.dtype) -> Any:
    from transformers import Glm4vForConditionalGeneration

    config = glm4v_config(path)
    del config.quantization_config
    # Built on the CPU (not on "meta"): buffers that are not in the checkpoint, such as the rotary
    # frequencies, must be computed by the constructor. Its random init costs seconds on a small model.
    model = Glm4vForConditionalGeneration._from_config(config, dtype=dtype)
    model.load_state_dict(dequantized_state_dict(path), strict=True)
    return model


def dequantized_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint, each packed layer's ``qweight/qzeros/scales`` read back into
    ``weight`` (float32)."""
    raw: dict[str, torch.Tensor] = {}
    for shard in sorted(path.glob("*.safetensors")):
        with safe_open(str(shard), framework="pt") as f:
            raw.update({k: f.get_tensor(k) for k in f.keys()})  # noqa: SIM118 (safe_open is not a dict)
    state: dict[str, torch.Tensor] = {}
    for key in list(raw):
        if key.endswith(".qweight"):
            prefix = key[: -len(".qweight")]
            packed = [raw.pop(f"{prefix}.{n}") for n in ("qweight", "qzeros", "scales")]
            state[f"{prefix}.weight"] = from_gemm(*packed).dequantize()
    state.update(raw)
    return state
