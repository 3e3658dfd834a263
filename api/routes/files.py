"""/v1/files, the OpenAI Files API as batches use it: upload (purpose=batch), list, retrieve, content,
delete. A tenant sees only its own files."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from api.deps import BatchesDep, SettingsDep, TenantDep
from jobs.errors import InvalidInput, SourceTooLarge

router = APIRouter(prefix="/v1/files", tags=["openai"])

_UPLOAD_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "purpose"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "JSONL requests"},
                        "purpose": {"type": "string", "enum": ["batch"]},
                    },
                }
            }
        },
    }
}


@router.post("", openapi_extra=_UPLOAD_DOC)
async def upload_file(
    request: Request, batches: BatchesDep, settings: SettingsDep, tenant: TenantDep
) -> dict[str, Any]:
    """Store a batch input file (JSONL) in S3; its metadata goes to Postgres. The body is capped while
    it streams (api.limits); the file goes from Starlette's spool file to S3 in parts."""
    limit = settings.limits.max_upload_bytes
    async with request.form(max_files=1, max_fields=10) as form:
        file, purpose = form.get("file"), form.get("purpose")
        if not isinstance(file, UploadFile) or not isinstance(purpose, str):
            raise InvalidInput("a file upload needs a 'file' part and a 'purpose' field")
        size = file.size or 0
        if size > limit:
            raise SourceTooLarge(f"{file.filename}: {size} bytes; the limit is {limit}")
        name = file.filename or "upload.jsonl"
        return await run_in_threadpool(batches.upload, tenant, name, purpose, file.file, size)


@router.get("")
async def list_files(
    batches: BatchesDep,
    tenant: TenantDep,
    purpose: Annotated[str | None, Query(max_length=32)] = None,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    order: Annotated[Literal["asc", "desc"], Query()] = "desc",
) -> dict[str, Any]:
    """The tenant's files, newest first (``order=asc``: oldest first), in cursor pages as OpenAI's."""
    data, has_more = await run_in_threadpool(
        batches.list_files, tenant, purpose, after, limit, order == "desc"
    )
    first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
    return {"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": has_more}


@router.delete("/{file_id}")
async def delete_file(file_id: str, batches: BatchesDep, tenant: TenantDep) -> dict[str, Any]:
    return await run_in_threadpool(batches.delete_file, tenant, file_id)


@router.get("/{file_id}")
async def get_file(file_id: str, batches: BatchesDep, tenant: TenantDep) -> dict[str, Any]:
    return await run_in_threadpool(batches.file, tenant, file_id)


@router.get("/{file_id}/content")
async def file_content(file_id: str, batches: BatchesDep, tenant: TenantDep) -> Response:
    data = await run_in_threadpool(batches.file_content, tenant, file_id)
    return Response(data, media_type="application/jsonl")
