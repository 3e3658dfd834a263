"""Load a GLM-4.1V checkpoint into transformers, AWQ ones included, with no AWQ kernels.

transformers 5.17 runs AWQ checkpoints only through gptqmodel, and no gptqmodel release fits this
project: the ones for transformers 5.14-5.19 pin numpy==2.2.6, the newer ones need transformers
>= 5.20. So the CPU engine reads an AWQ checkpoint by unpacking its 4-bit weights into ordinary float
weights at load time: the same numbers vLLM's kernels compute with, at float memory and speed. That is
what development and CI need (the quantized model's answers on CPU), not a way to serve it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from workers.quantization.awq_format import from_gemm


def is_awq(model_path: str | Path) -> bool:
    config = Path(model_path) / "config.json"
    if not config.is_file():
        return False
    qc = json.loads(config.read_text()).get("quantization_config") or {}
    return bool(qc.get("quant_method") == "awq")


def load_glm4v(model_path: str | Path, dtype: torch.dtype) -> Any:
    """Glm4vForConditionalGeneration from a float or an AWQ (gemm) checkpoint."""
    from transformers import Glm4vForConditionalGeneration

    if not is_awq(model_path):
        return Glm4vForConditionalGeneration.from_pretrained(model_path, local_files_only=True, dtype=dtype)
    return _load_dequantized(Path(model_path), dtype)


def _load_dequantized(path: Path, dtype: torch.dtype) -> Any:
    from transformers import AutoConfig, Glm4vForConditionalGeneration

    config: Any = AutoConfig.from_pretrained(path, local_files_only=True)
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
