"""Build the configured engine once per worker process (never per task)."""

from __future__ import annotations

import logging
import threading
import time

from jobs.config import Settings, get_settings
from workers.inference.engine import Engine

log = logging.getLogger(__name__)
_engine: Engine | None = None
_lock = threading.Lock()


def load_engine(settings: Settings) -> Engine:
    m = settings.model
    if m.engine == "fake":  # tests and benchmarks only: fixed latency, canned output
        from workers.inference.fake_engine import FakeEngine

        return FakeEngine(
            settings.model_id, m.fake_latency_seconds, m.fake_output_tokens, m.fake_token_seconds
        )
    if m.engine == "openai":  # an OpenAI-compatible server runs the model (docs/engines.md)
        from workers.inference.openai_engine import OpenAIEngine

        return OpenAIEngine(settings)
    if m.engine == "vllm":
        from workers.inference.vllm_engine import VllmEngine  # GPU extra only

        return VllmEngine(settings)
    from workers.inference.transformers_engine import TransformersEngine

    dtype = m.dtype if m.dtype != "auto" else ("float32" if m.device == "cpu" else "bfloat16")
    return TransformersEngine(m.path, settings.model_id, device=m.device, dtype=dtype)


def get_engine() -> Engine:
    """The process's engine, loaded on first use (the worker also loads it at start, see tasks)."""
    global _engine
    with _lock:
        if _engine is None:
            t0 = time.monotonic()
            _engine = load_engine(get_settings())
            log.info("engine %s loaded in %.1f s", _engine.name, time.monotonic() - t0)
        return _engine
