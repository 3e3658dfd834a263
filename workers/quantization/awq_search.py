"""Activation-aware weight quantization (AWQ, Lin et al. 2023) of one GLM-4.1V text decoder layer.

The steps and their constants are AutoAWQ's (``awq/quantize/quantizer.py``, MIT), so a checkpoint made
here is what AutoAWQ would make if it knew this architecture:

1. Run the layer on the calibration inputs, recording every linear layer's input.
2. Per group of linear layers fed by one operation (a norm or a linear), search a per-input-channel
   scale ``s = x_mean^r / w_mean^(1-r)`` over ``r`` in a grid of 20: weights times ``s``, quantized,
   divided by ``s``; keep the ``s`` whose quantized output is closest to the float output. Then fold
   ``1/s`` into the feeding operation and ``s`` into the weights: the float layer computes the same
   function, and its salient input channels lose less to rounding.
3. Per linear layer (except q and k: attention scores amplify their error), search how far to clip
   each group's weight range (down to half) so the quantized output error is least.
4. Round to 4 bits per group of 128 input channels, with a zero point.

GLM-4's decoder layer differs from Llama's in two ways that matter here: gate and up projections are
one ``gate_up_proj`` (gate rows first), and extra norms follow attention and the MLP. Those norms act
on outputs, so no scale crosses them; the up half of ``gate_up_proj`` can take ``down_proj``'s scale
because the MLP multiplies it elementwise into ``down_proj``'s input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from workers.quantization.awq_format import GROUP_SIZE, fake_quantize, quantize_weight, to_gemm

LINEARS = (
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_up_proj", "mlp.down_proj",
)  # fmt: skip
NO_CLIP = ("self_attn.q_proj", "self_attn.k_proj")
N_GRID = 20
CLIP_MAX_SHRINK = 0.5
CLIP_TOKENS = 512  # tokens the clip search looks at (spread over the calibration set)
CLIP_CHUNK_ELEMENTS = 2**27  # bounds the clip search's temporaries (x 4 bytes, a few of them)


@dataclass
class LayerInput:
    """One calibration sample at a decoder layer's input: hidden states ``[1, tokens, hidden]`` and the
    keyword arguments the text model passes every layer (M-RoPE position embeddings, mask)."""

    hidden: torch.Tensor
    kwargs: dict[str, Any]


@dataclass(frozen=True)
class ScaleGroup:
    prev: str  # the operation whose output feeds ``linears``: a norm or a linear layer
    linears: tuple[str, ...]
    inspect: str | None  # the block whose output error is measured; None: the one linear itself
    prev_rows: int = 0  # a linear ``prev``: only its last ``prev_rows`` output rows feed ``linears``


def scale_groups(layer: nn.Module) -> list[ScaleGroup]:
    attn: Any = layer.get_submodule("self_attn")
    groups = [ScaleGroup("input_layernorm", LINEARS[:3], "self_attn")]
    # v -> o only without grouped-query attention (GLM-4.1V-9B has 2 KV heads for 32: skipped there).
    if attn.v_proj.weight.shape == attn.o_proj.weight.shape:
        groups.append(ScaleGroup("self_attn.v_proj", ("self_attn.o_proj",), None))
    groups.append(ScaleGroup("post_attention_layernorm", ("mlp.gate_up_proj",), "mlp"))
    down: Any = layer.get_submodule("mlp.down_proj")
    groups.append(ScaleGroup("mlp.gate_up_proj", ("mlp.down_proj",), None, prev_rows=down.in_features))
    return groups


@torch.no_grad()
def quantize_layer(
    layer: nn.Module, inputs: list[LayerInput], group_size: int = GROUP_SIZE
) -> tuple[dict[str, torch.Tensor], list[LayerInput]]:
    """AWQ on ``layer`` (on the device its inputs are on). Returns its stored tensors (gemm format,
    names relative to the layer, on the CPU) and the next layer's inputs: the float layer's outputs."""
    feats, outs = _capture(layer, inputs)
    groups = scale_groups(layer)
    scales = [_search_scale(layer, g, feats, inputs, group_size) for g in groups]
    for group, s in zip(groups, scales, strict=True):
        _apply_scale(layer, group, s, feats)
    for name in LINEARS:
        if name not in NO_CLIP:
            _clip(_linear(layer, name), feats[name], group_size)
    tensors: dict[str, torch.Tensor] = {}
    for name in LINEARS:
        lin = _linear(layer, name)
        for key, t in to_gemm(quantize_weight(lin.weight, group_size)).items():
            tensors[f"{name}.{key}"] = t.cpu()
        if lin.bias is not None:
            tensors[f"{name}.bias"] = lin.bias.detach().half().cpu()
    return tensors, [LayerInput(o, x.kwargs) for o, x in zip(outs, inputs, strict=True)]


def _linear(layer: nn.Module, name: str) -> nn.Linear:
    mod = layer.get_submodule(name)
    assert isinstance(mod, nn.Linear), name
    return mod


def _capture(
    layer: nn.Module, inputs: list[LayerInput]
) -> tuple[dict[str, list[torch.Tensor]], list[torch.Tensor]]:
    """Each linear layer's input per sample, and the layer's output per sample."""
    feats: dict[str, list[torch.Tensor]] = {name: [] for name in LINEARS}

    def record(name: str) -> Any:
        return lambda _mod, args, _out: feats[name].append(args[0].detach())

    hooks = [layer.get_submodule(n).register_forward_hook(record(n)) for n in LINEARS]
    try:
        outs = [_first(layer(x.hidden, **x.kwargs)) for x in inputs]
    finally:
        for h in hooks:
            h.remove()
    return feats, outs


def _first(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


def _run(block: nn.Module, xs: list[torch.Tensor], kwargs: list[dict[str, Any]]) -> list[torch.Tensor]:
    return [_first(block(x, **kw)) for x, kw in zip(xs, kwargs, strict=True)]


def _search_scale(
    layer: nn.Module,
    group: ScaleGroup,
    feats: dict[str, list[torch.Tensor]],
    inputs: list[LayerInput],
    group_size: int,
) -> torch.Tensor:
    linears = [_linear(layer, n) for n in group.linears]
    xs = feats[group.linears[0]]
    x_mean = _channel_mean(xs)
    w = torch.cat([lin.weight.float() for lin in linears])
    wg = w.abs().view(-1, group_size)
    w_mean = (wg / (wg.amax(dim=1, keepdim=True) + 1e-6)).view(w.shape).mean(0)
    block = layer.get_submodule(group.inspect) if group.inspect else linears[0]
    # Attention needs each sample's positions and mask; the MLP and lone linears see tokens one by
    # one, so all samples go through them as one sequence (one large matmul, not one per page).
    if group.inspect == "self_attn":
        kwargs = [x.kwargs for x in inputs]
    else:
        xs, kwargs = [torch.cat([x.reshape(-1, x.shape[-1]) for x in xs])], [{}]
    reference = _run(block, xs, kwargs)
    originals = [lin.weight.detach().clone() for lin in linears]
    best, best_err = torch.ones_like(x_mean), float("inf")
    for step in range(N_GRID):
        ratio = step / N_GRID
        s = (x_mean.pow(ratio) / (w_mean.pow(1 - ratio) + 1e-4)).clamp(min=1e-4)
        s = torch.nan_to_num(s / (s.max() * s.min()).sqrt(), nan=1.0, posinf=1.0)
        for lin, w0 in zip(linears, originals, strict=True):
            lin.weight.data = (fake_quantize(w0.float() * s, group_size) / s).to(w0.dtype)
        err = _error(reference, _run(block, xs, kwargs))
        if err < best_err:
            best, best_err = s.clone(), err
    for lin, w0 in zip(linears, originals, strict=True):
        lin.weight.data = w0
    return best


def _channel_mean(xs: list[torch.Tensor]) -> torch.Tensor:
    total = sum(x.abs().float().reshape(-1, x.shape[-1]).sum(0) for x in xs)
    count = sum(x.numel() // x.shape[-1] for x in xs)
    assert isinstance(total, torch.Tensor)
    return total / count


def _error(reference: list[torch.Tensor], out: list[torch.Tensor]) -> float:
    sq = sum(float((r.float() - o.float()).pow(2).sum()) for r, o in zip(reference, out, strict=True))
    return sq / sum(r.numel() for r in reference)


def _apply_scale(
    layer: nn.Module, group: ScaleGroup, s: torch.Tensor, feats: dict[str, list[torch.Tensor]]
) -> None:
    """Fold ``1/s`` into the feeding operation and ``s`` into the weights (the same float function)."""
    prev = layer.get_submodule(group.prev)
    rows = slice(-group.prev_rows, None) if group.prev_rows else slice(None)
    weight: Any = prev.weight
    scaled = weight.data.float()
    scaled[rows] = scaled[rows] / (s.view(-1, 1) if isinstance(prev, nn.Linear) else s)
    weight.data = scaled.to(weight.dtype)
    bias: Any = getattr(prev, "bias", None)
    if isinstance(prev, nn.Linear) and bias is not None:
        b = bias.data.float()
        b[rows] = b[rows] / s
        bias.data = b.to(bias.dtype)
    for name in group.linears:
        lin = _linear(layer, name)
        lin.weight.data = (lin.weight.float() * s).to(lin.weight.dtype)
        feats[name] = [(x.float() / s).to(x.dtype) for x in feats[name]]


def _clip(lin: nn.Linear, xs: list[torch.Tensor], group_size: int) -> None:
    """Shrink each group's weight range where that lowers the quantized output error."""
    w = lin.weight.detach().float()
    n_out, n_in = w.shape
    x = torch.cat([t.reshape(-1, n_in) for t in xs])
    x = x[:: max(1, x.shape[0] // CLIP_TOKENS)].float()
    xg = x.view(x.shape[0], n_in // group_size, group_size).transpose(0, 1)  # groups, tokens, group_size
    chunk = max(1, CLIP_CHUNK_ELEMENTS // (x.shape[0] * xg.shape[0]))
    for start in range(0, n_out, chunk):
        w[start : start + chunk] = _clip_rows(w[start : start + chunk], xg, group_size)
    lin.weight.data = w.to(lin.weight.dtype)


def _clip_rows(w: torch.Tensor, xg: torch.Tensor, group_size: int) -> torch.Tensor:
    """AutoAWQ's clip search, with each group's partial products as one batched matmul."""
    rows, n_in = w.shape
    wg = w.view(rows, n_in // group_size, group_size)
    org_max = wg.abs().amax(dim=-1, keepdim=True)  # rows, groups, 1
    reference = torch.bmm(xg, wg.permute(1, 2, 0))  # groups, tokens, rows
    best_max, min_err = org_max.clone(), torch.full_like(org_max, float("inf"))
    for step in range(int(CLIP_MAX_SHRINK * N_GRID)):
        max_val = org_max * (1 - step / N_GRID)
        q = fake_quantize(torch.clamp(wg, -max_val, max_val).view(rows, n_in), group_size).view_as(wg)
        err = (torch.bmm(xg, q.permute(1, 2, 0)) - reference).pow(2).mean(dim=1).t().unsqueeze(-1)
        better = err < min_err
        min_err[better], best_max[better] = err[better], max_val[better]
    return torch.clamp(wg, -best_max, best_max).view(rows, n_in)
