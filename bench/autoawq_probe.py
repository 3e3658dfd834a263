"""Does AutoAWQ 0.2.9 work with this project's torch and transformers? Run it in a SEPARATE venv
(autoawq must never enter the project's), from the repo root:

    python3 -m venv /tmp/venv-awq && /tmp/venv-awq/bin/pip install autoawq==0.2.9 \\
        torch==2.14.1 torchvision==0.29.1 transformers==5.17.0 pymupdf pillow
    PYTHONPATH=$PWD /tmp/venv-awq/bin/python -m bench.autoawq_probe /tmp/awq-probe

It prints one JSON line per check. Seen on 2026-11-25 (torch 2.14.1, transformers 5.17.0, CPU):
imports with a DeprecationWarning ("officially deprecated and will no longer be maintained", last
tested with torch 2.6 / transformers 4.51); GLM-4.1V refused ("glm4v isn't supported yet"); a tiny
Llama quantizes (86 s for 2 tiny layers on 2 cores); vlmq's packing is bit-identical to its
WQLinear_GEMM.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any


def report(check: str, ok: bool, detail: Any) -> None:
    print(json.dumps({"check": check, "ok": ok, "detail": detail}), flush=True)


def probe_import() -> None:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        import awq

    notes = [str(w.message).strip().splitlines()[0:4] for w in seen if w.category is DeprecationWarning]
    report("import", True, {"version": awq.__version__, "deprecation": notes})


def probe_glm4v(out: Path) -> None:
    from awq import AutoAWQForCausalLM

    from workers.inference.tiny_model import build_tiny_model

    build_tiny_model(out / "tiny-glm4v")
    try:
        AutoAWQForCausalLM.from_pretrained(str(out / "tiny-glm4v"))
        report("glm4v", True, "loaded")
    except Exception as e:
        report("glm4v", False, f"{type(e).__name__}: {e}")


def probe_llama(out: Path) -> None:
    import torch
    from awq import AutoAWQForCausalLM
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from workers.inference.tiny_model import build_tokenizer

    cfg = LlamaConfig(vocab_size=151584, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).half().save_pretrained(out / "llama")
    build_tokenizer().save_pretrained(out / "llama")
    t0 = time.monotonic()
    try:
        model = AutoAWQForCausalLM.from_pretrained(str(out / "llama"), device_map="cpu")
        quant = {"zero_point": True, "q_group_size": 128, "w_bit": 4, "version": "GEMM"}
        texts = ["The quick brown fox jumps over the lazy dog. " * 2] * 64
        model.quantize(AutoTokenizer.from_pretrained(out / "llama"), quant_config=quant, calib_data=texts,
                       max_calib_samples=8, max_calib_seq_len=128)  # fmt: skip
        report("llama", True, {"seconds": round(time.monotonic() - t0, 1)})
    except Exception:
        report("llama", False, traceback.format_exc(limit=3))


def probe_packing() -> None:
    import torch
    from awq.modules.linear.gemm import WQLinear_GEMM

    from workers.quantization import awq_format as fmt

    torch.manual_seed(0)
    lin = torch.nn.Linear(256, 64)
    qw = fmt.quantize_weight(lin.weight.data)
    lin.weight.data = qw.dequantize()  # on the grid, so rounding cannot differ
    ref = WQLinear_GEMM.from_linear(lin, 4, 128, scales=qw.scales.t().contiguous(), zeros=qw.zeros.t())
    mine = fmt.to_gemm(qw)
    same = {k: torch.equal(getattr(ref, k).cpu(), mine[k]) for k in ("qweight", "qzeros", "scales")}
    report("packing_matches_autoawq", all(same.values()), same)


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/awq-probe")
    out.mkdir(parents=True, exist_ok=True)
    probe_import()
    probe_glm4v(out)
    probe_llama(out)
    probe_packing()


if __name__ == "__main__":
    main()
