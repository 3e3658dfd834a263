"""Pydantic contracts shared by the API, the workers and the CLI."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

CUSTOM_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/@+=-]{0,254}$"


class JobOptions(BaseModel):
    """Per-job generation and rendering options; unset values take the server's settings."""

    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int | None = Field(default=None, ge=1, le=32768)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    longest_side: int | None = Field(default=None, ge=64, le=4096)


class ItemIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    custom_id: str = Field(pattern=CUSTOM_ID_PATTERN)
    uri: str = Field(min_length=6, max_length=2048, description="s3://bucket/key of a PDF, image or video")
    prompt: str | None = Field(default=None, max_length=20_000)

    @field_validator("uri")
    @classmethod
    def _s3_only(cls, v: str) -> str:
        # Other schemes (https, file) come with the URI allow-list settings; until then only S3.
        if not v.startswith("s3://") or "/" not in v[5:] or v.endswith("/"):
            raise ValueError("uri must be s3://bucket/key")
        return v


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[ItemIn] = Field(min_length=1)
    prompt: str | None = Field(default=None, max_length=20_000)
    options: JobOptions = Field(default_factory=JobOptions)

    @field_validator("items")
    @classmethod
    def _unique_custom_ids(cls, items: list[ItemIn]) -> list[ItemIn]:
        counts = Counter(i.custom_id for i in items)
        dupes = sorted(c for c, n in counts.items() if n > 1)
        if dupes:
            raise ValueError(f"custom_id must be unique within a job; repeated: {', '.join(dupes[:10])}")
        return items


class Counts(BaseModel):
    total: int = 0
    completed: int = 0
    failed: int = 0


class JobOut(BaseModel):
    id: uuid.UUID
    status: str
    request_counts: Counts
    page_counts: Counts
    model_id: str
    prompt_version: str
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    error: str | None = None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ErrorInfo(BaseModel):
    code: str
    message: str


class ResultLine(BaseModel):
    """One line of a job's results JSONL: a page's result, or an item's/page's error."""

    custom_id: str
    page: int | None
    status: Literal["succeeded", "failed", "cancelled", "pending"]
    answer: str | None = None
    reasoning: str | None = None
    boxes: list[str] = Field(default_factory=list)
    finish_reason: str | None = None
    truncated: bool | None = None
    answer_missing: bool | None = None
    flags: list[str] = Field(default_factory=list)
    usage: Usage | None = None
    model_id: str | None = None
    prompt_version: str | None = None
    error: ErrorInfo | None = None
