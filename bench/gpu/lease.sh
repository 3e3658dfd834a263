#!/bin/bash
# The issue-3 benchmark in one GPU lease, on the lent machine after the carry calls (README "GPU"):
#
#   bash bench/gpu/lease.sh setup     # kit install, vlmq's wheels, the 9B-shaped AWQ model (~2 min)
#   bash bench/gpu/lease.sh start     # raw, then system, then the GPU tests, in the background
#   bash bench/gpu/lease.sh poll      # progress; copies what is done to $OUT
#
# The runs: the raw engine (LLM.generate) and the whole system on the same pages, one engine or worker
# for several runs in turn (SIZES, default 256,512; PREP_NICE, each system run's prep niceness), with
# vLLM's per-request timestamps and throughput line on for both. Lines go to /opt/bench/bench.jsonl.
#
# Issues 26 and 27 (session 13): SYSTEM_FIRST=1 runs the system before raw (its GPU worker's start is the
# lease's cold one) and RESTART=1 restarts that worker last (the warm start); each start's phases go out as
# a worker_start line (bench/gpu/startup.py). SERVE=1 then runs the system through `vllm serve` (the
# openai engine) on SIZES, and RUNBATCH=N `vllm run-batch` on the pages of the N-page run.
#
# Several GPUs (issues 8 and 9; multicast stays off: setup.sh exports NCCL_NVLS_ENABLE=0): TP=2 runs raw
# and system at tensor parallel 2, then the system again as TP-1 workers, one per GPU (data parallel),
# on the same GPUs. MODEL picks the checkpoint: AWQ of group 128 (the kit's) serves TP 1 only, so build
# group 64 (TP 2) or 32 (TP 4) first: `GROUP_SIZE=64 bash bench/gpu/quantize.sh build` then `... full`
# (one call each), and MODEL=/opt/models/glm-awq-g64. With TP > 1 the kit's group-128 model is first
# loaded raw at that TP on 8 pages, to record what vLLM itself does with it (raw-g128.log).
set -euo pipefail
step=${1:?setup, start or poll}
work=/opt/bench
repo=/opt/vlmq-repo
sizes=${SIZES:-256,512}
tp=${TP:-1}
model=${MODEL:-/opt/models/glm-awq}
nice=${PREP_NICE:-}
profile=${PROFILE:+--profile $work/gpu-worker.pyspy}  # PROFILE=1: py-spy on the GPU worker, mid-run and tail
alone=${ENGINE_ALONE:-}  # ENGINE_ALONE=256: vlmq's engine alone (no Celery, S3, Postgres) on that many pages
fair=${FAIR_PAGES:-}  # FAIR_PAGES=1024: then a bulk job of that many pages with 1-page jobs arriving
every=${SMALL_EVERY:-5}  # ... one every this many seconds (bench/gpu/fair.py)
videos=${VIDEO_EVERY:-}  # VIDEO_EVERY=3: every third small job a 3 s video (the mixed run)
tests=${GPU_TESTS-tests/gpu/test_vllm_engine.py tests/gpu/test_quantize.py}  # GPU_TESTS= : none
system_first=${SYSTEM_FIRST:-}  # SYSTEM_FIRST=1: the system before raw (its GPU worker starts cold)
restart=${RESTART:+--restart}  # RESTART=1: last in the system run, its GPU worker restarted (warm start)
serve=${SERVE:-}  # SERVE=1: after raw, the system through `vllm serve` (the openai engine) on SIZES
runbatch=${RUNBATCH:-}  # RUNBATCH=1024: then `vllm run-batch` on the pages of that size's run

case $step in
setup)
  bash .gpu/kit/device_install.sh >/dev/null
  bash bench/gpu/setup.sh > /opt/setup.out
  mkdir -p $work /opt/models
  rm -rf /opt/kitcopy && cp -r .gpu/kit /opt/kitcopy
  eval "$(tail -1 /opt/setup.out)"
  [ -d /opt/models/glm-awq ] || python3 .gpu/kit/glm4v_synth.py /opt/models/glm-awq full --awq --device cuda \
    > $work/synth.log 2>&1
  du -sh /opt/models/glm-awq
  ;;
start)
  # A copy of the tree: the device tool refreshes the working copy at every call. Where the last call
  # carried .gpu/head.tar.gz (`git archive HEAD -o .gpu/head.tar.gz`), the committed tree instead: the
  # working copy may hold others' unfinished changes.
  rm -rf $repo && mkdir -p $repo
  if [ -f .gpu/head.tar.gz ]; then tar -xzf .gpu/head.tar.gz -C $repo; else cp -r . $repo && rm -rf $repo/.gpu $repo/.whl; fi
  cd $repo
  raw_run="python3 -m bench.gpu.run raw --model $model --quantization awq --tp $tp --sizes $sizes --out $work/bench.jsonl > $work/raw.log 2>&1"
  cat > $work/run.sh <<RUN
set -x
eval "\$(tail -1 /opt/setup.out)"
export VLLM_CACHE_ROOT=/opt/vllm-cache PATH=/opt/vlmq/bin:\$PATH VLMQ_TEST_CACHE=/opt/models/cache
export VLMQ_TEST_FULL_MODEL=$model VLMQ_TEST_FULL_QUANTIZATION=awq  # tests/gpu/test_full_model.py
cd $repo
nvidia-smi --query-gpu=name,memory.total --format=csv
$( [ "$tp" -gt 1 ] && echo "python3 -m bench.gpu.run raw --model /opt/models/glm-awq --quantization awq --tp $tp --sizes 8 --out $work/g128.jsonl > $work/raw-g128.log 2>&1" )
$( [ -z "$system_first" ] && echo "$raw_run" )
python3 -m bench.gpu.run system --model $model --quantization awq --tp $tp --sizes $sizes ${nice:+--prep-nice $nice} $profile ${fair:+--fair-pages $fair --small-every $every} ${videos:+--video-every $videos} $restart --out $work/bench.jsonl > $work/system.log 2>&1
$( [ -n "$system_first" ] && echo "$raw_run" )
${serve:+python3 -m bench.gpu.run serve --model $model --quantization awq --sizes $sizes --out $work/bench.jsonl > $work/serve.log 2>&1}
${runbatch:+python3 -m bench.gpu.run runbatch --model $model --quantization awq --sizes $sizes --pages $runbatch --out $work/bench.jsonl > $work/runbatch.log 2>&1}
$( [ "$tp" -gt 1 ] && echo "python3 -m bench.gpu.run system --model $model --quantization awq --gpu-workers $tp --sizes $sizes --out $work/bench.jsonl > $work/system-dp.log 2>&1" )
${alone:+python3 -m bench.gpu.run engine --model $model --quantization awq --pages $alone --out $work/bench.jsonl > $work/engine.log 2>&1}
${tests:+python3 -m pytest $tests -W default -p no:cacheprovider -q -rA > $work/tests.log 2>&1}
echo done > $work/finished
RUN
  rm -f $work/finished
  setsid nohup bash $work/run.sh > $work/driver.log 2>&1 < /dev/null &
  echo "started: $work/run.sh"
  ;;
poll)
  date
  for f in driver raw-g128 raw system system-dp serve runbatch engine tests; do
    # A log with no matching line yet (grep: status 1) must not end the poll before the copy below.
    [ -f $work/$f.log ] && { echo "== $f"; grep -v "^\s*$" $work/$f.log | grep -E "RESULT|\[system|\[serve|passed|failed|Error|error|^\+" | tail -n 8 | cut -c1-400 || true; }
  done
  if [ -n "${OUT:-}" ]; then cp $work/*.log $work/*.jsonl $work/*.pyspy.* "$OUT"/ 2>/dev/null || true; fi
  if [ -f $work/finished ]; then echo FINISHED; fi
  ;;
esac
