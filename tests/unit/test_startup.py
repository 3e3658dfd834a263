"""The GPU worker's start phases (workers.startup) and the benchmark's reading of them and of vLLM's
own log lines (bench.gpu.startup)."""

from __future__ import annotations

import json
import time

from bench.gpu.startup import breakdown
from workers.startup import Phases, process_age

# Lines as vLLM 0.26's engine core prints them (prefix, time stamp, source), and the worker's own.
_CORE = "(EngineCore_DP0 pid=4242) INFO 12-06 05:01:02"
_WORKER = {"total_s": 78.4, "process_and_imports": 6.1, "processor": 0.8, "vllm_engine": 68.2, "warm_up": 1.1,
           "engine_other": 0.0, "database_and_s3": 0.3, "result_writers": 1.9}  # fmt: skip
LOG = "\n".join([
    f"{_CORE} [default_loader.py:308] Loading weights took 3.41 seconds",
    f"{_CORE} [gpu_model_runner.py:2602] Model loading took 7.9354 GiB and 4.112735 seconds",
    f"{_CORE} [backends.py:548] Dynamo bytecode transform time: 6.50 s",
    f"{_CORE} [backends.py:215] Compiling a graph for compile range (1, 8192) takes 19.20 s",
    f"{_CORE} [monitor.py:34] torch.compile took 25.70 s in total",
    f"{_CORE} [gpu_model_runner.py:3480] Graph capturing finished in 9 secs, took 0.61 GiB",
    f"{_CORE} [core.py:210] init engine (profile, create kv cache, warmup model) took 41.02 s "
    "(compilation: 26.10 s — language_model: 25.70 s, encoder: 0.40 s)",
    "vlmq worker: engine vllm (bench) ready in 70.1 s",
    f"vlmq worker: start phases {json.dumps(_WORKER)}",
]) + "\n"  # fmt: skip


def test_the_benchmark_reads_the_workers_phases_and_vllms() -> None:
    got = breakdown(LOG)
    assert got["worker"]["total_s"] == 78.4 and got["worker"]["vllm_engine"] == 68.2
    assert got["vllm"] == {
        "weights": 3.41, "model_loading": 4.112735, "dynamo_transform": 6.5, "compile_graph": 19.2,
        "torch_compile_total": 25.7, "cuda_graphs": 9.0, "init_engine_total": 41.02,
        "init_engine_compilation": 26.1, "init_engine_encoder_compile": 0.4,
    }  # fmt: skip
    assert len(got["vllm_lines"]) == 8  # the seven, and the worker's ready line (it states seconds)


def test_a_second_start_in_one_log_keeps_the_last_and_nothing_is_made_up() -> None:
    second = LOG.replace('"total_s": 78.4', '"total_s": 40.0').replace("takes 19.20 s", "takes 1.00 s")
    assert breakdown(LOG + second)["worker"]["total_s"] == 40.0
    assert breakdown(LOG + second)["vllm"]["compile_graph"] == 1.0
    assert breakdown("no engine here\n") == {"worker": {}, "vllm": {}, "vllm_lines": []}


def test_phases_add_up_to_the_time_since_the_process_started() -> None:
    age = process_age()
    assert age is not None and 0 < age < 3600  # this test process is not an hour old
    phases = Phases()
    time.sleep(0.05)
    phases.mark("imports")
    time.sleep(0.1)
    phases.add({"engine": 0.06}, rest="engine_other")  # the engine's own parts leave 0.04 s
    assert phases.marks["imports"] >= age + 0.05 - 0.02  # /proc counts in 10 ms ticks; marks round to 0.01
    assert 0.03 <= phases.marks["engine_other"] <= 0.2
    assert abs(phases.total - sum(phases.marks.values())) < 0.05
    assert phases.line().startswith("vlmq worker: start phases {")


def test_one_cache_directory_holds_every_compile_and_jit_cache() -> None:
    """A fleet's volume (model.compile_cache_dir) must hold Triton's, inductor's and FlashInfer's JIT
    caches too: in /tmp and the home they die with the machine, and a new one compiles again."""
    from workers.startup import cache_env

    env = cache_env("/cache/vllm")
    assert env == {
        "VLLM_CACHE_ROOT": "/cache/vllm",
        "TRITON_CACHE_DIR": "/cache/vllm/triton",
        "TORCHINDUCTOR_CACHE_DIR": "/cache/vllm/inductor",
        "FLASHINFER_WORKSPACE_BASE": "/cache/vllm/flashinfer",
    }
