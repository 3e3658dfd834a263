"""Prompt presets. Each has a version string stored on every job and result, so reprocessing can find
results made by an older prompt. Change a preset's text => bump its version.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    name: str
    version: str
    prompt: str


CAPTION = Preset(
    name="caption",
    version="caption-v1",
    prompt="Describe this page: its type, its layout, and the main content it conveys.",
)

PRESETS = {p.name: p for p in (CAPTION,)}
DEFAULT = CAPTION


def prompt_version(custom_prompt: str | None) -> str:
    """The default preset's version, or ``custom-<hash>`` naming a user's own prompt text."""
    if custom_prompt is None:
        return DEFAULT.version
    return "custom-" + hashlib.sha256(custom_prompt.encode()).hexdigest()[:12]
