"""A job's results as Markdown (``vlmq results JOB --format md``): per document, per page, the answer,
the reasoning folded under it, or the error."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def _fold(reasoning: str) -> list[str]:
    # <details> keeps long reasoning out of the way in any renderer that takes HTML (GitHub, most viewers).
    return ["<details><summary>Reasoning</summary>", "", reasoning.strip(), "", "</details>", ""]


def _page(r: dict[str, Any]) -> list[str]:
    title = f"### Page {r['page']}" if r.get("page") else "### Document"
    out = [title, ""]
    if r.get("error"):
        out += [f"> **Error `{r['error']['code']}`**: {r['error']['message']}", ""]
    elif r["status"] != "succeeded":
        out += [f"_{r['status']}_", ""]
    else:
        out += [(r.get("answer") or "").strip() or "_(no answer)_", ""]
        if r.get("flags"):
            out += ["Flags: " + ", ".join(f"`{f}`" for f in r["flags"]), ""]
        if r.get("reasoning"):
            out += _fold(r["reasoning"])
    return out


def to_markdown(job_id: str, lines: Iterable[dict[str, Any]]) -> str:
    out = [f"# Job {job_id}", ""]
    current = None
    for r in lines:
        if r["custom_id"] != current:
            current = r["custom_id"]
            out += [f"## {current}", ""]
        out += _page(r)
    return "\n".join(out).rstrip() + "\n"
