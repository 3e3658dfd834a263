"""docs/configuration.md is generated from jobs/config.py: it lists every setting with its real default."""

from __future__ import annotations

from api.cli.config_doc import PATH, render
from jobs.config import Settings


def test_the_configuration_page_is_current() -> None:
    assert PATH.read_text() == render(), "stale: run `vlmq dev config-doc > docs/configuration.md`"


def test_every_setting_is_on_the_page() -> None:
    page = render()
    for section, info in Settings.model_fields.items():
        fields = getattr(info.annotation, "model_fields", {section: None})
        for name in fields:
            env = f"VLMQ_{section.upper()}__{name.upper()}" if name != section else f"VLMQ_{name.upper()}"
            assert f"`{env}`" in page, env
