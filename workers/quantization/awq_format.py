"""The AWQ "gemm" checkpoint format (AutoAWQ's, which vLLM and transformers load as quant_method "awq").

For a linear layer with weight ``W [out, in]``, 4 bits, groups of ``g`` input channels, zero point:

* ``scales  [in/g, out]``   float16, one per (group, output channel)
* ``qzeros  [in/g, out/8]`` int32, eight 4-bit zero points per int32
* ``qweight [in, out/8]``   int32, eight 4-bit weights per int32

and ``W[o, i] = (q[i, o] - z[i // g, o]) * s[i // g, o]``. Eight 4-bit values share an int32 in the
interleaved order ``PACK_ORDER``: nibble k (bits 4k..4k+3) of packed column c holds output column
``8c + PACK_ORDER[k]``. Readers undo it with the inverse order, which vLLM spells
``AWQ_REVERSE_ORDER = [0, 4, 1, 5, 2, 6, 3, 7]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

BITS = 4
GROUP_SIZE = 128
MAX_Q = 2**BITS - 1
PACK = 32 // BITS  # values per int32
PACK_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
UNPACK_ORDER = tuple(PACK_ORDER.index(j) for j in range(PACK))
# The vision tower keeps its float weights: it is small (about 5% of GLM-4.1V-9B) and quantizing it
# costs accuracy for little memory. vLLM and transformers skip modules whose name contains this.
NOT_CONVERTED = ["visual"]


def quantization_config(group_size: int = GROUP_SIZE) -> dict[str, Any]:
    """config.json's ``quantization_config``: the published GLM-4.1V AWQ checkpoint's settings."""
    return {
        "quant_method": "awq",
        "bits": BITS,
        "group_size": group_size,
        "zero_point": True,
        "version": "gemm",
        "modules_to_not_convert": list(NOT_CONVERTED),
    }


@dataclass(frozen=True)
class Quantized:
    """One linear layer's weight in integer form, not yet packed: ``q [out, in]``, ``scales`` and
    ``zeros [out, in/g]``. ``scales`` are already rounded to float16, the precision they are stored in,
    so ``q`` is computed against exactly the scales a reader will use."""

    q: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor
    group_size: int

    def dequantize(self) -> torch.Tensor:
        out, n_in = self.q.shape
        q = self.q.view(out, n_in // self.group_size, self.group_size).float()
        w = (q - self.zeros.float().unsqueeze(-1)) * self.scales.float().unsqueeze(-1)
        return w.view(out, n_in)


def quantize_weight(w: torch.Tensor, group_size: int = GROUP_SIZE) -> Quantized:
    """Asymmetric round-to-nearest per group of ``group_size`` input channels (min/max range)."""
    out, n_in = w.shape
    if n_in % group_size:
        raise ValueError(f"weight {tuple(w.shape)}: its input size does not divide by {group_size}")
    g = w.detach().float().view(out, n_in // group_size, group_size)
    lo, hi = g.amin(dim=-1), g.amax(dim=-1)
    scales = ((hi - lo).clamp(min=1e-5) / MAX_Q).half().float()
    zeros = (-torch.round(lo / scales)).clamp(0, MAX_Q)
    q = (torch.round(g / scales.unsqueeze(-1)) + zeros.unsqueeze(-1)).clamp(0, MAX_Q)
    return Quantized(q.view(out, n_in).to(torch.int32), scales.half(), zeros.to(torch.int32), group_size)


def fake_quantize(w: torch.Tensor, group_size: int = GROUP_SIZE) -> torch.Tensor:
    """``w`` after a quantize/dequantize round trip, in ``w``'s dtype: what the search measures."""
    return quantize_weight(w, group_size).dequantize().to(w.dtype)


def pack(values: torch.Tensor) -> torch.Tensor:
    """``[rows, cols]`` ints in 0..15 -> ``[rows, cols/8]`` int32, nibbles in ``PACK_ORDER``."""
    rows, cols = values.shape
    if cols % PACK:
        raise ValueError(f"cannot pack {cols} columns: not a multiple of {PACK}")
    v = values.to(torch.int64).view(rows, cols // PACK, PACK)[:, :, list(PACK_ORDER)]
    shifts = torch.arange(0, 32, BITS, device=values.device, dtype=torch.int64)
    packed = (v << shifts).sum(dim=-1)
    # Two's complement by hand: the high nibble sets bit 31, which int32 can only hold as negative.
    packed = torch.where(packed >= 2**31, packed - 2**32, packed)
    return packed.to(torch.int32)


def unpack(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of ``pack``: ``[rows, cols/8]`` int32 -> ``[rows, cols]`` int32 in 0..15."""
    rows, n = packed.shape
    shifts = torch.arange(0, 32, BITS, device=packed.device, dtype=torch.int32)
    nibbles = (packed.unsqueeze(-1) >> shifts) & MAX_Q
    return nibbles[:, :, list(UNPACK_ORDER)].reshape(rows, n * PACK)


def to_gemm(qw: Quantized) -> dict[str, torch.Tensor]:
    """The three stored tensors of one layer (names relative to the layer's prefix)."""
    return {
        "qweight": pack(qw.q.t().contiguous()),
        "qzeros": pack(qw.zeros.t().contiguous()),
        "scales": qw.scales.t().contiguous(),
    }


def from_gemm(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor) -> Quantized:
    """Read the stored tensors back (group size from the shapes)."""
    n_in = qweight.shape[0]
    return Quantized(
        unpack(qweight).t().contiguous(),
        scales.t().contiguous(),
        unpack(qzeros).t().contiguous(),
        n_in // scales.shape[0],
    )
