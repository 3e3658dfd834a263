"""`vlmq quantize` on the GPU, and its output served by the GPU worker's engine with the published AWQ
checkpoint's setting (quantization "awq"): the taught tiny model must still give its taught answers."""

from __future__ import annotations

from pathlib import Path

from jobs.config import Settings
from jobs.prompts.presets import DEFAULT
from tests.fixtures.models import TARGETS, taught_pages
from workers.inference.engine import GenerationRequest
from workers.quantization.calibration import CalibrationPage
from workers.quantization.checkpoint import quantize_checkpoint


def test_quantized_on_gpu_and_served_by_vllm(taught_model_dir: Path, tmp_path: Path) -> None:
    from workers.inference.vllm_engine import VllmEngine

    pages = [CalibrationPage(f"p{i}", img, DEFAULT.prompt) for i, img in enumerate(taught_pages())]
    report = quantize_checkpoint(taught_model_dir, tmp_path / "awq", pages, device="cuda")
    print(f"tiny quantize on GPU: {report}")
    assert report.device.startswith("cuda") and report.peak_gpu_bytes
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        model={"engine": "vllm", "path": str(tmp_path / "awq"), "quantization": "awq",
               "max_model_len": 4096, "gpu_memory_utilization": 0.3, "thinking_budget": None},
    )  # fmt: skip
    engine = VllmEngine(settings)
    try:
        reqs = [GenerationRequest(f"t{i}", DEFAULT.prompt, [p.image], 64) for i, p in enumerate(pages[:2])]
        assert [o.text for o in engine.generate(reqs)] == TARGETS
    finally:
        engine.shutdown()
