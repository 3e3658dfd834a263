"""What a result was made with, beyond the model and the prompt: the settings that change outputs.

Stored on every result as JSONB (``results.settings``) with a short hash (``results.settings_hash``),
so two results can be compared at a glance and a reprocessing run can tell what moved.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from jobs.config import Settings


def output_settings(settings: Settings, options: Mapping[str, Any]) -> dict[str, Any]:
    """The engine and render settings for one job: its options over the worker's settings.

    Left out on purpose: what only changes speed (batching, tensor parallel, memory), not outputs.
    """
    m = settings.model
    return {
        "engine": m.engine,
        "quantization": m.quantization,
        "dtype": m.dtype,
        "max_new_tokens": int(options.get("max_new_tokens", m.max_new_tokens)),
        "temperature": float(options.get("temperature", m.temperature)),
        "thinking_budget": m.thinking_budget,
        "longest_side": int(options.get("longest_side", settings.limits.render_longest_side)),
        "dpi": options.get("dpi"),
        "granularity": options.get("granularity", "page"),
    }


def settings_hash(values: Mapping[str, Any]) -> str:
    """Stable across processes and key order: sha256 of the canonical JSON, 16 hex digits."""
    canonical = json.dumps(values, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
