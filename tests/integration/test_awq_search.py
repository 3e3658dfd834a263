"""The AWQ search on a real GLM-4.1V text decoder layer (transformers' own module, random weights):
folding scales keeps the float function, and the search beats plain rounding on outlier-heavy
activations, the case AWQ exists for."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fixtures.extras import require_quantize_extra

require_quantize_extra()
pytestmark = pytest.mark.quantize

import torch  # noqa: E402

from workers.quantization import awq_format as fmt  # noqa: E402
from workers.quantization.awq_search import (  # noqa: E402
    LINEARS,
    LayerInput,
    _apply_scale,
    quantize_layer,
    scale_groups,
)


def _layer(kv_heads: int = 2) -> Any:
    from transformers.models.glm4v.modeling_glm4v import Glm4vTextDecoderLayer, Glm4vTextRotaryEmbedding

    from workers.inference.tiny_model import build_config

    text = build_config().text_config
    text.num_key_value_heads = kv_heads
    text._attn_implementation = "sdpa"
    torch.manual_seed(0)
    layer = Glm4vTextDecoderLayer(text, layer_idx=0).eval()
    with torch.no_grad():  # norms start at 1: random ones show a wrongly folded scale
        for name in ("input_layernorm", "post_attention_layernorm"):
            layer.get_submodule(name).weight.uniform_(0.5, 1.5)
    return layer, Glm4vTextRotaryEmbedding(text)


def _inputs(rope: Any, tokens: list[int], outliers: bool = False) -> list[Any]:
    g = torch.Generator().manual_seed(2)
    out = []
    for n in tokens:
        x = torch.randn(1, n, 256, generator=g)
        if outliers:  # a few salient channels, as LLM activations have: what AWQ protects
            x[..., :4] *= 30
        positions = torch.arange(n).view(1, 1, n).expand(3, 1, n)
        out.append(LayerInput(x, {"position_embeddings": rope(x, positions), "attention_mask": None}))
    return out


def _outputs(layer: Any, inputs: list[Any]) -> list[Any]:
    with torch.no_grad():
        return [layer(x.hidden, **x.kwargs) for x in inputs]


@pytest.mark.parametrize("kv_heads", [2, 4])  # 4 = no grouped-query attention: v -> o is scaled too
def test_folding_scales_keeps_the_float_layer_function(kv_heads: int) -> None:
    layer, rope = _layer(kv_heads)
    inputs = _inputs(rope, [7, 12])
    before = _outputs(layer, inputs)
    groups = scale_groups(layer)
    assert len(groups) == (4 if kv_heads == 4 else 3)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for group in groups:
            width = layer.get_submodule(group.linears[0]).in_features
            _apply_scale(layer, group, torch.rand(width, generator=g) * 4 + 0.25, {n: [] for n in LINEARS})
    for a, b in zip(before, _outputs(layer, inputs), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def _dequantized_error(layer: Any, tensors: dict[str, Any], inputs: list[Any], reference: list[Any]) -> float:
    with torch.no_grad():
        for name in LINEARS:
            packed = {k: tensors[f"{name}.{k}"] for k in ("qweight", "qzeros", "scales")}
            layer.get_submodule(name).weight.data = fmt.from_gemm(**packed).dequantize()
    out = _outputs(layer, inputs)
    num = sum(float((o - r).pow(2).sum()) for o, r in zip(out, reference, strict=True))
    return num / sum(float(r.pow(2).sum()) for r in reference)


def test_awq_beats_plain_rounding_on_salient_channels() -> None:
    layer, rope = _layer()
    inputs = _inputs(rope, [64, 48], outliers=True)
    reference = _outputs(layer, inputs)
    rtn = {
        f"{n}.{k}": v
        for n in LINEARS
        for k, v in fmt.to_gemm(fmt.quantize_weight(layer.get_submodule(n).weight)).items()
    }
    rtn_err = _dequantized_error(_layer()[0], rtn, inputs, reference)
    awq_layer = _layer()[0]
    tensors, next_inputs = quantize_layer(awq_layer, inputs)
    for nxt, ref in zip(next_inputs, reference, strict=True):  # the next layer sees float outputs
        torch.testing.assert_close(nxt.hidden, ref)
    awq_err = _dequantized_error(awq_layer, tensors, inputs, reference)
    assert awq_err < 0.8 * rtn_err, (awq_err, rtn_err)
