"""`vlmq quantize` on the taught tiny GLM-4.1V: run as a user runs it (a subprocess), calibrated on a
folder of pages; then the checkpoint's config and tensors, its error against the float model, the
untouched vision tower, and the CPU engine still giving the taught answers. Also the refusals, and
calibration from a job's pages on real Postgres and S3."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.fixtures.extras import require_quantize_extra

require_quantize_extra()

import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402

from api.cli import app  # noqa: E402
from jobs.config import Settings  # noqa: E402
from jobs.errors import NotFound  # noqa: E402
from jobs.schemas import JobCreate  # noqa: E402
from jobs.service import build_service  # noqa: E402
from tests.fixtures.models import PAGE_SIDE, TARGETS, taught_pages, taught_pdf  # noqa: E402
from workers.inference.engine import GenerationRequest  # noqa: E402
from workers.inference.prompts import DEFAULT_PROMPT  # noqa: E402
from workers.inference.tiny_model import build_config  # noqa: E402
from workers.inference.transformers_engine import TransformersEngine  # noqa: E402
from workers.media.images import encode_png  # noqa: E402
from workers.quantization.awq_format import from_gemm, quantization_config  # noqa: E402
from workers.quantization.calibration import pages_from_job  # noqa: E402
from workers.quantization.checks import QuantizeError  # noqa: E402
from workers.quantization.loading import dequantized_state_dict  # noqa: E402

pytestmark = [pytest.mark.quantize, pytest.mark.slow]
FIXTURES = Path(__file__).parents[1] / "fixtures"
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_up_proj", "down_proj")


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for shard in folder.glob("*.safetensors"):
        with safe_open(str(shard), framework="pt") as f:
            out.update({k: f.get_tensor(k) for k in f.keys()})  # noqa: SIM118
    return out


@pytest.fixture(scope="module")
def calibration_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two page images, a 3-page PDF, and a corrupt image that must be skipped, not fatal."""
    folder = tmp_path_factory.mktemp("calibration")
    for i, img in enumerate(taught_pages()[:2], start=1):
        (folder / f"page-{i}.png").write_bytes(encode_png(img))
    (folder / "pages.pdf").write_bytes(taught_pdf())
    shutil.copy(FIXTURES / "corrupt_image.png", folder / "a-corrupt.png")
    (folder / "notes.txt").write_text("not a page")
    return folder


@pytest.fixture(scope="module")
def quantized(
    taught_model_dir: Path, calibration_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    dst = tmp_path_factory.mktemp("awq") / "taught-awq"
    env = {**os.environ, "VLMQ_LIMITS__RENDER_LONGEST_SIDE": str(PAGE_SIDE)}
    cmd = [sys.executable, "-m", "api.cli", "quantize", str(taught_model_dir), str(dst)]
    cmd += ["--calibration", str(calibration_dir), "--samples", "4", "--device", "cpu"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "VLMQ_MODEL__QUANTIZATION=awq" in proc.stdout
    # The tiny model's attention output is 256 wide: four GPUs would get 64 inputs, half a group.
    assert "tensor parallel sizes it splits into on vLLM 0.26: 1, 2" in " ".join(proc.stdout.split())
    assert "a-corrupt.png" in proc.stderr  # named in the warning that skips it
    return dst


def test_config_is_the_published_awq_layout(quantized: Path) -> None:
    config = json.loads((quantized / "config.json").read_text())
    assert config["quantization_config"] == {
        "quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True, "version": "gemm",
        "modules_to_not_convert": ["visual"],
    }  # fmt: skip
    assert config["quantization_config"] == quantization_config()
    assert config["model_type"] == "glm4v" and config["architectures"] == ["Glm4vForConditionalGeneration"]
    assert {config["dtype"], config["text_config"]["dtype"], config["vision_config"]["dtype"]} == {"float16"}
    meta = json.loads((quantized / "vlmq-quantize.json").read_text())
    # Round robin over the readable files (sorted), the corrupt one skipped.
    assert meta["pages"] == ["page-1.png", "page-2.png", "pages.pdf#1", "pages.pdf#2"]
    assert meta["samples"] == 4 and meta["layers"] == 2 and meta["tokens"] > 4 * 100
    for name in ("tokenizer.json", "tokenizer_config.json", "processor_config.json", "chat_template.jinja"):
        assert (quantized / name).is_file(), name


def test_decoder_linears_are_packed_int4(quantized: Path, taught_model_dir: Path) -> None:
    q, src = _tensors(quantized), _tensors(taught_model_dir)
    for layer in range(2):
        for name in LINEARS:
            part = "mlp" if "gate" in name or "down" in name else "self_attn"
            prefix = f"model.language_model.layers.{layer}.{part}.{name}"
            n_out, n_in = src[f"{prefix}.weight"].shape
            assert f"{prefix}.weight" not in q
            assert q[f"{prefix}.qweight"].dtype == torch.int32 and q[f"{prefix}.qweight"].shape == (
                n_in,
                n_out // 8,
            )
            assert q[f"{prefix}.qzeros"].dtype == torch.int32
            assert q[f"{prefix}.qzeros"].shape == (n_in // 128, n_out // 8)
            assert q[f"{prefix}.scales"].dtype == torch.float16
            assert q[f"{prefix}.scales"].shape == (n_in // 128, n_out)
            if f"{prefix}.bias" in src:
                assert q[f"{prefix}.bias"].dtype == torch.float16


def test_everything_else_is_the_source_in_float16(quantized: Path, taught_model_dir: Path) -> None:
    q, src = _tensors(quantized), _tensors(taught_model_dir)
    untouched = [k for k in src if not k.endswith(tuple(f"{n}.weight" for n in LINEARS))]
    untouched = [k for k in untouched if "layernorm" not in k or "visual" in k]  # AWQ folds scales there
    assert any(k.startswith("model.visual.") for k in untouched) and "lm_head.weight" in untouched
    for k in untouched:
        assert q[k].dtype == torch.float16, k
        assert torch.equal(q[k], src[k].half()), k
    assert not any("visual" in k and k.endswith(("qweight", "qzeros", "scales")) for k in q)


def _effective(state: dict[str, torch.Tensor], src: dict[str, torch.Tensor], key: str, norm: str) -> Any:
    """The dequantized weight with the input scale AWQ folded into ``norm`` taken back out."""
    ratio = state[norm].float() / src[norm].float()
    return state[key] * ratio


def test_dequantized_weights_approximate_the_originals(quantized: Path, taught_model_dir: Path) -> None:
    state, src = dequantized_state_dict(quantized), _tensors(taught_model_dir)
    for layer in range(2):
        base = f"model.language_model.layers.{layer}"
        checks = [(f"{base}.self_attn.{n}.weight", f"{base}.input_layernorm.weight") for n in LINEARS[:3]]
        checks.append((f"{base}.mlp.gate_up_proj.weight", f"{base}.post_attention_layernorm.weight"))
        for key, norm in checks:
            # gate_up's up half also carries down_proj's folded scale: compare its gate half only.
            rows = src[key].shape[0] // 2 if "gate_up" in key else src[key].shape[0]
            orig = src[key].float()[:rows]
            err = (_effective(state, src, key, norm)[:rows] - orig).norm() / orig.norm()
            # 4-bit min/max rounding of a Gaussian group of 128 alone gives about 0.1.
            assert err < 0.2, (key, float(err))
    packed = _tensors(quantized)
    prefix = "model.language_model.layers.0.mlp.down_proj"
    assert torch.equal(
        state[f"{prefix}.weight"],
        from_gemm(*(packed[f"{prefix}.{n}"] for n in ("qweight", "qzeros", "scales"))).dequantize(),
    )


def test_cpu_engine_still_gives_the_taught_answers(quantized: Path) -> None:
    engine = TransformersEngine(str(quantized), "taught-awq")
    requests = [
        GenerationRequest(f"p{i}", DEFAULT_PROMPT, [img], 48, 0.0) for i, img in enumerate(taught_pages()[:2])
    ]
    outputs = engine.generate(requests)
    assert [o.text for o in outputs] == TARGETS


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, ["quantize", *args])


def test_refusals_name_the_problem(
    quantized: Path, taught_model_dir: Path, calibration_dir: Path, tmp_path: Path
) -> None:
    llama = tmp_path / "llama"
    llama.mkdir()
    (llama / "config.json").write_text(json.dumps({"model_type": "llama"}))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no pages here")
    cases = [
        ((str(llama), str(tmp_path / "out"), "-c", str(calibration_dir)), "is a llama checkpoint"),
        ((str(tmp_path / "nowhere"), str(tmp_path / "out"), "-c", str(calibration_dir)), "is not a folder"),
        ((str(quantized), str(tmp_path / "out"), "-c", str(calibration_dir)), "already quantized (awq)"),
        ((str(taught_model_dir), str(quantized), "-c", str(calibration_dir)), "already exists"),
        ((str(taught_model_dir), str(tmp_path / "out"), "-c", str(empty)), "empty calibration set"),
        ((str(taught_model_dir), str(tmp_path / "out"), "-c", str(tmp_path / "nope")), "does not exist"),
        ((str(taught_model_dir), str(tmp_path / "out"), "-c", str(empty), "--samples", "0"), "at least 1"),
        (
            (str(taught_model_dir), str(tmp_path / "out"), "-c", str(empty), "--group-size", "48"),
            "--group-size must be one of (128, 64, 32)",
        ),
    ]
    for args, message in cases:
        result = _cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert message in " ".join(result.output.split()), (message, result.output)
    assert not (tmp_path / "out").exists()


def _job_with_pages(settings: Settings, pages: int) -> uuid.UUID:
    service = build_service(settings)
    bucket = service.store.bucket
    req = JobCreate.model_validate(
        {"items": [{"custom_id": "scan", "uri": f"s3://{bucket}/in/scan.pdf"}], "prompt": "Read the total."}
    )
    job, _ = service.submit("tenant-a", req)
    with service.sessions() as s:
        from jobs.models import Item

        source = s.query(Item).filter(Item.job_id == job.id).one()
    assert service.begin_prep(source.id) is not None
    keys = []
    for i, img in enumerate(taught_pages()[:pages], start=1):
        keys.append((i, service.store.put(f"media/test-{uuid.uuid4().hex}-{i}.png", encode_png(img))))
    service.finish_prep(source.id, keys)
    return job.id


def test_calibration_from_a_job_reads_its_pages_from_s3(settings: Settings) -> None:
    job_id = _job_with_pages(settings, 3)
    pages = pages_from_job(build_service(settings), job_id, 2)
    assert [p.name for p in pages] == [f"job/{job_id}/scan#1", f"job/{job_id}/scan#2"]
    assert all(p.prompt == "Read the total." for p in pages)
    assert pages[0].image.tobytes() == taught_pages()[0].tobytes()


def test_calibration_from_a_job_refuses_unknown_and_unprepared_jobs(settings: Settings) -> None:
    service = build_service(settings)
    with pytest.raises(NotFound, match="not found"):
        pages_from_job(service, uuid.uuid4(), 4)
    with pytest.raises(QuantizeError, match="no prepared page"):
        pages_from_job(service, _job_with_pages(settings, 0), 4)


def test_a_job_id_without_a_database_is_refused(
    taught_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobs.config import get_settings

    monkeypatch.chdir(tmp_path)  # no .env or dev stack file to find a database in
    monkeypatch.delenv("VLMQ_DB__URL", raising=False)
    get_settings.cache_clear()
    try:
        result = _cli(str(taught_model_dir), str(tmp_path / "out"), "-c", str(uuid.uuid4()))
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2, result.output
    assert "needs the job database" in " ".join(result.output.split())


def test_a_config_silent_on_its_rotary_size_rotates_half_of_each_head(tmp_path: Path) -> None:
    """transformers' own Glm4vConfig() defaults (the GPU kit's 9B model is built from them) name M-RoPE
    sections of 32 frequencies but no rotary factor; transformers 5.17 then rotates all 128 dimensions
    of a head and fails in the first forward pass. glm4v_config sets the half that vLLM assumes."""
    from transformers import Glm4vConfig
    from transformers.models.glm4v.modeling_glm4v import Glm4vTextRotaryEmbedding

    from workers.quantization.loading import glm4v_config

    Glm4vConfig().save_pretrained(tmp_path)
    x, positions = torch.zeros(1, 5, 8), torch.arange(5).expand(3, 1, 5)
    with pytest.raises(RuntimeError, match="split_sizes"):  # the failure seen on the GPU machine
        Glm4vTextRotaryEmbedding(Glm4vConfig.from_pretrained(tmp_path).text_config)(x, positions)
    text = glm4v_config(tmp_path).text_config
    assert text.rope_parameters["partial_rotary_factor"] == 0.5
    cos, _ = Glm4vTextRotaryEmbedding(text)(x, positions)
    assert cos.shape[-1] == 64  # half of the 128-wide head
    # A config that already agrees (the tiny test model: 64-wide heads, all rotary) is left as it is.
    tiny = tmp_path / "tiny"
    build_config().save_pretrained(tiny)
    assert glm4v_config(tiny).text_config.rope_parameters["partial_rotary_factor"] == 1.0
