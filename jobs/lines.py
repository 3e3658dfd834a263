"""A job's result lines: what GET /v1/jobs/{id}/results streams and the output/error files hold, one per
page result or failed (or cancelled) item, built from its rows (jobs.repository.result_rows)."""

from __future__ import annotations

from typing import Any

from jobs.models import Item, Result
from jobs.schemas import ErrorInfo, Region, ResultLine, Usage

LINE_STATES = ("succeeded", "failed", "cancelled")  # the others read "pending"


def jsonl(lines: list[str]) -> bytes:
    return ("\n".join(lines) + ("\n" if lines else "")).encode()


def result_line(src: Item, unit: Item | None, res: Result | None, bucket: str) -> ResultLine:
    owner = unit or src
    status = owner.status if owner.status in LINE_STATES else "pending"
    line = ResultLine.model_validate(
        {"custom_id": src.custom_id, "page": unit.page if unit and unit.page else None, "status": status}
    )
    if unit is not None:
        line.pages = list(unit.options.get("pages", []))
        line.text_uri = f"s3://{bucket}/{unit.text_key}" if unit.text_key else None
    if owner.error_code:
        line.error = ErrorInfo(code=owner.error_code, message=owner.error_message or "")
    if res is not None:
        line.answer, line.reasoning = res.answer, res.reasoning
        line.boxes, line.regions = _boxes(res.boxes)
        line.finish_reason, line.truncated, line.answer_missing = (
            res.finish_reason,
            res.truncated,
            res.answer_missing,
        )
        line.flags, line.model_id, line.prompt_version = list(res.flags), res.model_id, res.prompt_version
        line.version, line.current, line.model_revision = res.version, res.is_current, res.model_revision
        line.settings, line.settings_hash = dict(res.settings), res.settings_hash or None
        total = res.prompt_tokens + res.completion_tokens
        line.usage = Usage(
            prompt_tokens=res.prompt_tokens, completion_tokens=res.completion_tokens, total_tokens=total
        )
    return line


def _boxes(stored: list[Any]) -> tuple[list[str], list[Region]]:
    """(box texts, regions) from a result's boxes: dicts with regions, or plain strings (older rows)."""
    texts = [b if isinstance(b, str) else b["text"] for b in stored]
    regions = [Region.model_validate(r) for b in stored if isinstance(b, dict) for r in b.get("regions", [])]
    return texts, regions
