"""Which tensor-parallel sizes a GLM-4.1V checkpoint splits into on vLLM 0.26, checked before the
engine loads. GLM-4.1V-9B's MLP is 13,696 wide (107 x 128): AWQ groups of 128 cannot be shared out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from workers.inference import tensor_parallel
from workers.inference.tensor_parallel import Shapes, TensorParallelError, check, problem, supported

# GLM-4.1V-9B-Thinking's text model (its config.json; transformers' Glm4vTextConfig defaults).
TEXT = {"hidden_size": 4096, "intermediate_size": 13696, "num_attention_heads": 32, "num_key_value_heads": 2}


def _config(group: int | None) -> dict[str, Any]:
    config: dict[str, Any] = {"model_type": "glm4v", "text_config": dict(TEXT)}
    if group is not None:
        config["quantization_config"] = {"quant_method": "awq", "bits": 4, "group_size": group}
    return config


@pytest.mark.parametrize(
    ("group", "sizes"), [(None, [1, 2, 4]), (128, [1]), (64, [1, 2]), (32, [1, 2, 4])]
)  # fmt: skip
def test_sizes_each_group_allows(group: int | None, sizes: list[int]) -> None:
    assert supported(Shapes.from_config(_config(group))) == sizes


def test_the_reason_names_the_layer_and_the_arithmetic() -> None:
    why = problem(Shapes.from_config(_config(128)), 2)
    assert why is not None
    assert "down projection's 13696 inputs among 2 GPUs (6848 each, 53.5 groups)" in why
    assert "The input size is not aligned" in why  # what vLLM itself would say, a minute later


def test_head_counts_must_divide_or_replicate() -> None:
    odd = Shapes(heads=6, kv_heads=3, head_dim=128, hidden=768, intermediate=4096, group_size=None)
    assert problem(odd, 4) == "its 6 attention heads do not divide among 4 GPUs"
    assert problem(odd, 2) == "its 3 key/value heads neither divide among nor replicate over 2 GPUs"


@pytest.mark.parametrize(("tp", "group"), [(2, 64), (4, 32)])
def test_check_refuses_with_the_way_out(tmp_path: Path, tp: int, group: int) -> None:
    (tmp_path / "config.json").write_text(json.dumps(_config(128)))
    with pytest.raises(TensorParallelError) as e:
        check(tmp_path, tp)
    message = str(e.value)
    assert f"tensor parallel size {tp} cannot serve" in message
    assert "served at tensor parallel 1;" in message
    assert f"--group-size {group}" in message
    assert e.value.code == "tensor_parallel_unsupported"
    check(tmp_path, 1)  # TP 1 is fine


def test_check_leaves_what_it_cannot_read_to_vllm(tmp_path: Path) -> None:
    check("THUDM/GLM-4.1V-9B-Thinking", 4)  # a hub id, not a folder
    (tmp_path / "config.json").write_text("{not json")
    check(tmp_path, 4)
    assert tensor_parallel.TP_SIZES == (1, 2, 4)


def test_the_size_is_read_from_the_environment_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from jobs.config import Settings

    monkeypatch.setenv("VLMQ_MODEL__TENSOR_PARALLEL_SIZE", "2")  # as docker-compose's tp2 profile sets it
    assert Settings(_env_file=None).model.tensor_parallel_size == 2  # type: ignore[call-arg]
    monkeypatch.setenv("VLMQ_MODEL__TENSOR_PARALLEL_SIZE", "3")
    with pytest.raises(ValidationError, match="must be 1, 2 or 4 GPUs per engine, not 3"):
        Settings(_env_file=None)  # type: ignore[call-arg]
