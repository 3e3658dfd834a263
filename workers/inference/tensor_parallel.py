"""Whether a GLM-4.1V checkpoint splits across ``tp`` GPUs the way vLLM 0.26 needs: checked from its
config.json before the engine loads (a minute or more), with the way out named.

vLLM splits each decoder layer's linear layers across the tensor-parallel ranks: the attention output
(``o_proj``) and the MLP's ``down_proj`` by their inputs, the others by their outputs. An AWQ layer
split by its inputs must give each rank whole quantization groups; otherwise vLLM 0.26 refuses to load
it (``auto_awq.py``: Marlin declines the layer, and the AWQ fallback raises "The input size is not
aligned with the quantized weight shape. This can be caused by too large tensor parallel size.").

GLM-4.1V-9B's MLP is 13,696 wide: 107 x 128. With AWQ's group size 128, the published checkpoint's,
it splits over no more than one GPU; group size 64 allows 2 and group size 32 allows 4
(``vlmq quantize --group-size``). Data parallel (one TP-1 worker per GPU) needs no split at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from jobs.errors import InvalidInput

TP_SIZES = (1, 2, 4)
GROUP_SIZES = (128, 64, 32)  # the AWQ groups vLLM's kernels (Marlin, Machete, the GEMM fallback) take
PACK = 8  # 4-bit values per int32 in AWQ's packed layout: a rank's outputs must fill whole int32s


class TensorParallelError(InvalidInput):
    code = "tensor_parallel_unsupported"


@dataclass(frozen=True)
class Shapes:
    heads: int
    kv_heads: int
    head_dim: int
    hidden: int
    intermediate: int
    group_size: int | None  # None: not AWQ

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Shapes:
        text = config.get("text_config") or config
        heads = int(text.get("num_attention_heads", 32))
        hidden = int(text.get("hidden_size", 4096))
        qc = config.get("quantization_config") or {}
        group = qc.get("group_size", qc.get("q_group_size")) if qc.get("quant_method") == "awq" else None
        return cls(
            heads=heads,
            kv_heads=int(text.get("num_key_value_heads") or heads),
            head_dim=int(text.get("head_dim") or hidden // heads),
            hidden=hidden,
            intermediate=int(text.get("intermediate_size", 13696)),
            group_size=None if group is None else int(group),
        )


def problem(shapes: Shapes, tp: int) -> str | None:
    """Why ``tp`` ranks cannot serve these shapes in vLLM 0.26, or None."""
    s = shapes
    if s.heads % tp:
        return f"its {s.heads} attention heads do not divide among {tp} GPUs"
    if s.kv_heads % tp and tp % s.kv_heads:  # vLLM replicates key/value heads when there are fewer
        return f"its {s.kv_heads} key/value heads neither divide among nor replicate over {tp} GPUs"
    if s.group_size is None or s.group_size == -1:
        return None
    g = s.group_size
    for name, inputs in (
        ("MLP's down projection", s.intermediate),
        ("attention output", s.heads * s.head_dim),
    ):
        if inputs % tp or (inputs // tp) % g:
            return (
                f"AWQ group size {g} does not divide the {name}'s {inputs} inputs among {tp} GPUs "
                f"({inputs / tp:g} each, {inputs / tp / g:g} groups); vLLM 0.26 refuses to load it "
                "('The input size is not aligned with the quantized weight shape')"
            )
    if (2 * s.intermediate // tp) % PACK:
        return f"the MLP's {2 * s.intermediate} outputs do not fill whole int32 packs on each of {tp} GPUs"
    return None


def supported(shapes: Shapes) -> list[int]:
    """The tensor-parallel sizes (of 1, 2, 4) that can serve these shapes."""
    return [tp for tp in TP_SIZES if problem(shapes, tp) is None]


def check(model_path: str | Path, tp: int) -> None:
    """Raise TensorParallelError, naming what to do instead, if ``tp`` cannot serve the checkpoint.
    A path without a readable config.json (a hub id, say) is left to vLLM."""
    config_path = Path(model_path) / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError):
        return
    shapes = Shapes.from_config(config)
    why = problem(shapes, tp)
    if why is None:
        return
    ok = supported(shapes)
    raise TensorParallelError(
        f"tensor parallel size {tp} cannot serve {model_path}: {why}. It can be served at tensor "
        f"parallel {', '.join(map(str, ok)) or 'none of 1, 2, 4'}; run one worker per GPU (data "
        "parallel, README) or re-quantize the bf16 model with a smaller group "
        f"(`vlmq quantize SRC DST --group-size {_group_for(shapes, tp)}`)."
    )


def _group_for(shapes: Shapes, tp: int) -> int:
    """The largest group size vLLM's kernels take that lets ``tp`` ranks serve it."""
    for g in GROUP_SIZES:
        if problem(replace(shapes, group_size=g), tp) is None:
            return g
    return GROUP_SIZES[-1]
