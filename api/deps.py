"""FastAPI dependencies as Annotated aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from api.auth import tenant_for
from jobs.config import Settings
from jobs.errors import Unauthorized
from jobs.openai.batches import BatchService
from jobs.service import JobService


def get_service(request: Request) -> JobService:
    service: JobService = request.app.state.service
    return service


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_tenant(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> str:
    presented = x_api_key
    if authorization and authorization.lower().startswith("bearer "):
        presented = authorization[7:].strip()
    tenant = tenant_for(request.app.state.api_keys, presented)
    if tenant is None:
        raise Unauthorized("missing or unknown API key (send 'Authorization: Bearer KEY' or 'X-API-Key')")
    return tenant


ServiceDep = Annotated[JobService, Depends(get_service)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
TenantDep = Annotated[str, Depends(get_tenant)]


def get_batches(request: Request) -> BatchService:
    batches: BatchService = request.app.state.batches
    return batches


BatchesDep = Annotated[BatchService, Depends(get_batches)]
