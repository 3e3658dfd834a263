"""/v1/files, the OpenAI Files API as batches use it: upload (purpose=batch), retrieve, content."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
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
    """Store a batch input file (JSONL) in S3; its metadata goes to Postgres."""
    limit = settings.limits.max_upload_bytes
    declared = int(request.headers.get("content-length") or 0)
    if declared > limit:  # refuse before Starlette spools the body to disk
        raise SourceTooLarge(f"upload is {declared} bytes; the limit is {limit}")
    async with request.form(max_files=1, max_fields=10) as form:
        file, purpose = form.get("file"), form.get("purpose")
        if not isinstance(file, UploadFile) or not isinstance(purpose, str):
            raise InvalidInput("a file upload needs a 'file' part and a 'purpose' field")
        data = await file.read()
    if len(data) > limit:
        raise SourceTooLarge(f"{file.filename}: {len(data)} bytes; the limit is {limit}")
    return await run_in_threadpool(batches.upload, tenant, file.filename or "upload.jsonl", purpose, data)


@router.get("/{file_id}")
async def get_file(file_id: str, batches: BatchesDep, tenant: TenantDep) -> dict[str, Any]:
    return await run_in_threadpool(batches.file, tenant, file_id)


@router.get("/{file_id}/content")
async def file_content(file_id: str, batches: BatchesDep, tenant: TenantDep) -> Response:
    data = await run_in_threadpool(batches.file_content, tenant, file_id)
    return Response(data, media_type="application/jsonl")
