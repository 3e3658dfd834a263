"""/v1/batches, the OpenAI Batch API: create, retrieve, list (cursor pages), cancel.

The contract (states, request counts, output and error files) is described in jobs.openai.batches; the
line format in jobs.openai.format.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from api.deps import BatchesDep, TenantDep

router = APIRouter(prefix="/v1/batches", tags=["openai"])


class BatchCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")  # newer clients send options this server has no use for

    input_file_id: str = Field(max_length=64)
    endpoint: str
    completion_window: str
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(default=None, max_length=16)


@router.post("")
async def create_batch(body: BatchCreate, batches: BatchesDep, tenant: TenantDep) -> dict[str, Any]:
    """Validates the input file and submits its requests as one job (see jobs.openai.batches)."""
    return await run_in_threadpool(
        batches.create, tenant, body.input_file_id, body.endpoint, body.completion_window, body.metadata
    )


@router.get("")
async def list_batches(
    batches: BatchesDep,
    tenant: TenantDep,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, Any]:
    data, has_more = await run_in_threadpool(batches.list, tenant, after, limit)
    first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
    return {"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": has_more}


@router.get("/{batch_id}")
async def get_batch(batch_id: str, batches: BatchesDep, tenant: TenantDep) -> dict[str, Any]:
    return await run_in_threadpool(batches.get, tenant, batch_id)


@router.post("/{batch_id}/cancel")
async def cancel_batch(batch_id: str, batches: BatchesDep, tenant: TenantDep) -> dict[str, Any]:
    return await run_in_threadpool(batches.cancel, tenant, batch_id)
