#!/bin/bash
# `vlmq quantize` on the lent GPU machine, then the result served by the GPU worker's engine (vLLM).
# Run from the repo root after the kit's device_install.sh and bench/gpu/setup.sh, with the environment
# setup.sh prints (eval "$(tail -1 /opt/setup.out)"). One device call per step (each under 10 minutes):
#
#   bash bench/gpu/quantize.sh build      # 9B-shaped bf16 random model (kit), taught tiny model, 32 pages
#   bash bench/gpu/quantize.sh tiny       # quantize the taught tiny model, serve it, check its answers
#   bash bench/gpu/quantize.sh full       # quantize the 9B-shaped model (time, peak GPU memory, size)
#   bash bench/gpu/quantize.sh serve      # load the 9B AWQ result in VllmEngine, generate for one page
#
# Figures go to $OUT/quantize.jsonl (one JSON line per step) and are printed.
set -euo pipefail
step=${1:?build, tiny, full or serve}
samples=${SAMPLES:-32}
kit=${KIT:-.gpu/kit}
models=${MODELS:-/opt/models}
out=${OUT:-/opt/quantize-bench}
mkdir -p "$models" "$out"
export VLMQ_TEST_CACHE=$models/cache HF_HUB_OFFLINE=1

# The quantize extra: torch, torchvision, transformers, safetensors, huggingface-hub and pillow come
# with the GPU image and vLLM; pymupdf is carried by bench/gpu/wheels.sh. Fail early if one is missing.
python3 -c "import torch, torchvision, transformers, safetensors, huggingface_hub, PIL, pymupdf" \
  || { echo "quantize extra incomplete: run bench/gpu/setup.sh first" >&2; exit 1; }

quantize() {  # SRC DST NAME: the command as a user types it; its own report lands in DST
  rm -rf "$2"
  python3 -m api.cli quantize "$1" "$2" --calibration "$out/calibration" --samples "$samples" --device "${DEVICE:-cuda}" \
    ${GROUP_SIZE:+--group-size $GROUP_SIZE}
  python3 - "$2" "$3" "$out" <<'EOF'
import json, sys
from pathlib import Path
dst, name, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
report = json.loads((dst / "vlmq-quantize.json").read_text())
report.pop("pages")
report["step"] = f"quantize-{name}"
report["output_gib"] = round(report["output_bytes"] / 2**30, 2)
report["peak_gpu_gib"] = round((report["peak_gpu_bytes"] or 0) / 2**30, 2)
print(json.dumps(report))
with open(out / "quantize.jsonl", "a") as f:
    f.write(json.dumps(report) + "\n")
EOF
}

serve() {  # MODEL NAME [--taught]
  python3 -m bench.gpu.quantize serve "$1" "${@:3}" | tail -1 | tee -a "$out/quantize.jsonl"
}

case $step in
  build)
    [ -f "$models/glm-bf16/config.json" ] \
      || python3 "$kit/glm4v_synth.py" "$models/glm-bf16" full --device cuda
    python3 -c "from tests.fixtures.models import taught_model; print(taught_model())" > "$out/taught.path"
    rm -rf "$out/calibration"
    python3 -m bench.gpu.quantize docs "$out/calibration" --docs 8 --pages $(( (samples + 7) / 8 ))
    du -sh "$models/glm-bf16" "$(cat "$out/taught.path")" "$out/calibration"
    ;;
  tiny)
    quantize "$(cat "$out/taught.path")" "$models/tiny-awq" tiny
    serve "$models/tiny-awq" tiny --taught
    ;;
  full)  # GROUP_SIZE=64 or 32: the AWQ groups that split over 2 or 4 GPUs (glm-awq-g64, glm-awq-g32)
    if [ -n "${GROUP_SIZE:-}" ]; then dst=$models/glm-awq-g$GROUP_SIZE; else dst=$models/glm-awq-vlmq; fi
    quantize "$models/glm-bf16" "$dst" full
    du -sh "$dst"
    ;;
  serve)
    serve "$models/glm-awq-vlmq" full
    ;;
  *) echo "unknown step $step" >&2; exit 2 ;;
esac
