"""docs/configuration.md, made from the Settings classes themselves (`vlmq dev config-doc`): every
variable, its default, and the comment beside or above its field in jobs/config.py, so the page cannot
miss a setting or drift from its default (tests/unit/test_config_doc.py fails when it is stale).

Why comments and not pydantic descriptions: the settings are documented where they are read, in
comments, and that is the text kept up to date; this reads it rather than asking for a second copy.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from jobs.config import Settings

PATH = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
HEAD = """# Configuration

Every setting is an environment variable, prefix `VLMQ_`, sections joined with `__`
(`VLMQ_LIMITS__MAX_PDF_PAGES=800`); lists and maps are JSON (`VLMQ_INPUTS__GRANTS='{"acme": [...]}'`).
A `.env` file in the working directory and `.vlmq/dev.env` (written by `vlmq dev up`) are read too;
real environment variables win. This page is generated from `jobs/config.py`
(`vlmq dev config-doc > docs/configuration.md`); a test fails when it is stale.
"""
_FIELD = re.compile(r"^\s{4}(\w+)\s*:")


def render() -> str:
    out = [HEAD]
    for section, cls in _sections():
        doc = cls.__dict__.get("__doc__")  # its own, not the base class's
        out.append(f"\n## `{section}`\n" if section else "\n## General\n")
        if doc:
            out.append(" ".join(doc.split()) + "\n")
        out.append("\n| variable | default | meaning |\n|---|---|---|\n")
        comments = _comments(cls)
        for name, info in cls.model_fields.items():
            if section == "" and _is_section(info):
                continue
            env = (
                f"VLMQ_{section.upper().replace('.', '__')}__{name.upper()}"
                if section
                else f"VLMQ_{name.upper()}"
            )
            out.append(f"| `{env}` | {_default(name, info)} | {comments.get(name, '')} |\n")
    return "".join(out)


def _sections() -> Iterator[tuple[str, type[BaseModel]]]:
    yield "", Settings
    for name, info in Settings.model_fields.items():
        if _is_section(info):
            cls: Any = info.annotation
            yield name, cls
            for sub, sub_info in cls.model_fields.items():
                if _is_section(sub_info):  # a section inside a section (model.openai): its own table
                    yield f"{name}.{sub}", sub_info.annotation


def _is_section(info: FieldInfo) -> bool:
    return isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)


def _default(name: str, info: FieldInfo) -> str:
    value: Any = info.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "its section below"
    if value is None or isinstance(value, SecretStr):
        return "unset"
    if isinstance(value, str):
        return f"`{value}`" if value else '`""`'
    if isinstance(value, (list, dict)):
        return f"`{_json(value)}`"
    if isinstance(value, bool):
        return str(value).lower()
    if name.endswith("bytes") and isinstance(value, int) and value and value % (1 << 20) == 0:
        return f"{value >> 20} MiB"
    if isinstance(value, int) and value >= 10_000:
        return f"{value:,}"
    return f"{value}"


def _json(value: Any) -> str:
    import json

    return json.dumps(value)


def _comments(cls: type[BaseModel]) -> dict[str, str]:
    """Each field's comment: the comment lines right above it, then the one at the end of its line."""
    found: dict[str, str] = {}
    above: list[str] = []
    for line in inspect.getsource(cls).splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped.lstrip("# "))
            continue
        match = _FIELD.match(line)
        if match:
            trailing = line.split("  # ", 1)[1].strip() if "  # " in line else ""
            text = " ".join([*above, trailing]).strip()
            found[match.group(1)] = text.replace("|", "\\|")
        above = []
    return found


def config_doc() -> None:
    """Print docs/configuration.md, made from the settings' classes (redirect it to that file)."""
    typer.echo(render(), nl=False)


def register(app: typer.Typer) -> None:
    app.command("config-doc")(config_doc)
