"""The AWQ gemm format on its own: packing as vLLM reads it back, rounding bounds, shapes."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fixtures.extras import require_quantize_extra

require_quantize_extra()
pytestmark = pytest.mark.quantize

import torch  # noqa: E402

from workers.quantization import awq_format as fmt  # noqa: E402

# vLLM 0.26, vllm/model_executor/layers/quantization/utils/quant_utils.py: how it reads AWQ nibbles.
VLLM_AWQ_REVERSE_ORDER = [0, 4, 1, 5, 2, 6, 3, 7]


def _vllm_unpack(packed: Any) -> Any:
    """vLLM's reading of a packed int32 matrix, written out independently of awq_format.unpack."""
    shifts = torch.arange(0, 32, 4, dtype=torch.int32)
    nibbles = (packed.unsqueeze(-1) >> shifts) & 0xF  # [rows, cols/8, 8] in storage order
    nibbles = nibbles[:, :, VLLM_AWQ_REVERSE_ORDER]
    return nibbles.reshape(packed.shape[0], -1)


def test_packing_is_what_vllm_reads_back() -> None:
    g = torch.Generator().manual_seed(0)
    values = torch.randint(0, 16, (64, 256), generator=g, dtype=torch.int32)
    packed = fmt.pack(values)
    assert packed.dtype == torch.int32 and packed.shape == (64, 32)
    assert torch.equal(_vllm_unpack(packed), values)
    assert torch.equal(fmt.unpack(packed), values)


def test_high_nibble_wraps_to_a_negative_int32() -> None:
    assert fmt.pack(torch.full((1, 8), 15, dtype=torch.int32)).item() == -1
    assert fmt.pack(torch.tensor([[0, 0, 0, 0, 0, 0, 0, 8]], dtype=torch.int32)).item() == -(2**31)


def test_round_trip_error_is_at_most_half_a_step() -> None:
    w = torch.randn(32, 512, generator=torch.Generator().manual_seed(1)) * 0.02
    qw = fmt.quantize_weight(w)
    assert qw.q.min() >= 0 and qw.q.max() <= 15
    step = qw.scales.float().repeat_interleave(fmt.GROUP_SIZE, dim=1)
    err = (qw.dequantize() - w).abs()
    assert torch.all(err <= step / 2 + 1e-6), float((err - step / 2).max())
    back = fmt.from_gemm(**fmt.to_gemm(qw))
    assert torch.equal(back.q, qw.q) and torch.equal(back.zeros, qw.zeros)
    assert torch.equal(back.scales, qw.scales) and back.group_size == fmt.GROUP_SIZE


def test_gemm_shapes_and_dtypes() -> None:
    tensors = fmt.to_gemm(fmt.quantize_weight(torch.randn(1024, 256)))
    assert tensors["qweight"].shape == (256, 128) and tensors["qweight"].dtype == torch.int32
    assert tensors["qzeros"].shape == (2, 128) and tensors["qzeros"].dtype == torch.int32
    assert tensors["scales"].shape == (2, 1024) and tensors["scales"].dtype == torch.float16


def test_input_size_must_split_into_groups() -> None:
    with pytest.raises(ValueError, match="does not divide by 128"):
        fmt.quantize_weight(torch.randn(8, 200))
