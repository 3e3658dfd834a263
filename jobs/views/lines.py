"""A job's result lines: what GET /v1/jobs/{id}/results streams and the output/error files hold, one per
page result or item without one, built from its rows (jobs.repository.result_rows). A line's status is
its item's outcome (jobs.status.outcome); every line without an answer says why in its error."""

from __future__ import annotations

from typing import Any

from jobs.models import Item, Result
from jobs.schemas import ErrorInfo, Region, ResultLine, Usage
from jobs.status import Outcome, outcome

# A cancelled item stores no error of its own (many paths cancel, none has a reason to give): its
# line gets this one, so a cancelled line too has an answer or an explicit error.
CANCELLED = ErrorInfo(code="cancelled", message="the job was cancelled before this item finished")


def item_error(item: Item) -> ErrorInfo | None:
    """The error a line (or the results page) shows for ``item``: its stored one, or CANCELLED. A
    stale code kept from a transient failure before the cancel is not the reason it has no answer."""
    if outcome(item.status, item.error_code) == Outcome.CANCELLED:
        return CANCELLED.model_copy()
    return ErrorInfo(code=item.error_code, message=item.error_message or "") if item.error_code else None


def result_line(src: Item, unit: Item | None, res: Result | None, bucket: str) -> ResultLine:
    owner = unit or src
    line = ResultLine(
        custom_id=src.custom_id,
        page=unit.page if unit and unit.page else None,
        status=outcome(owner.status, owner.error_code),
        error=item_error(owner),
    )
    if unit is not None:
        line.pages = list(unit.options.get("pages", []))
        line.text_uri = f"s3://{bucket}/{unit.text_key}" if unit.text_key else None
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
