"""The results page: server-rendered HTML (Jinja2, no JavaScript).

/ui lists the tenant's jobs with their progress; /ui/jobs/{id} shows each page's image beside its
answer, the reasoning folded under it (<details>) and errors in red; a video shows as a contact sheet of
its sampled frames with their times (workers.media.sheet).

Sign-in: the same API keys as the REST API. /ui/login takes the key in a form and keeps it in an
HttpOnly, SameSite=Strict cookie scoped to /ui (Secure over https), checked like a header on every
request; so a page shows only that key's tenant's jobs, and another tenant's job or image is a 404.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse
from fastapi.templating import Jinja2Templates

from api.auth import tenant_for
from api.deps import ServiceDep
from jobs.views import browse
from workers.media import clip, sheet

router = APIRouter(prefix="/ui", include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).resolve().parents[1] / "templates")
COOKIE = "vlmq_key"
SESSION_SECONDS = 8 * 3600
Offset = Annotated[int, Query(ge=0)]
Limit = Annotated[int, Query(ge=1, le=500)]
Cursor = Annotated[str | None, Query(max_length=2048)]


def _tenant(request: Request) -> str | None:
    return tenant_for(request.app.state.api_keys, request.cookies.get(COOKIE))


def _to_login() -> RedirectResponse:
    return RedirectResponse("/ui/login", status_code=303)


@router.get("/login")
async def login_form(request: Request) -> Response:
    return templates.TemplateResponse(request, "login.html", {"tenant": None, "error": None})


@router.post("/login")
async def login(request: Request) -> Response:
    form = await request.form()
    key = form.get("api_key")
    key = key if isinstance(key, str) else None
    if tenant_for(request.app.state.api_keys, key) is None:
        context = {"tenant": None, "error": "Unknown API key."}
        return templates.TemplateResponse(request, "login.html", context, status_code=401)
    response = RedirectResponse("/ui", status_code=303)
    response.set_cookie(
        COOKIE,
        key or "",
        max_age=SESSION_SECONDS,
        path="/ui",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout")
async def logout() -> Response:
    response = _to_login()
    response.delete_cookie(COOKIE, path="/ui")
    return response


@router.get("")
async def jobs_page(request: Request, service: ServiceDep, offset: Offset = 0, limit: Limit = 50) -> Response:
    tenant = _tenant(request)
    if tenant is None:
        return _to_login()
    rows = await run_in_threadpool(browse.jobs, service, tenant, limit, offset)
    context = {"tenant": tenant, "jobs": rows, "offset": offset, "limit": limit}
    return templates.TemplateResponse(request, "jobs.html", context)


@router.get("/jobs/{job_id}")
async def job_page(
    request: Request,
    job_id: uuid.UUID,
    service: ServiceDep,
    limit: Limit = 50,
    after: Cursor = None,
    before: Cursor = None,
) -> Response:
    """A job's rows a page at a time, by keyset: ``after`` / ``before`` are the pager's cursors."""
    tenant = _tenant(request)
    if tenant is None:
        return _to_login()
    job, pages, pager = await run_in_threadpool(browse.pages, service, tenant, job_id, limit, after, before)
    context = {"tenant": tenant, "job": job, "pages": pages, "pager": pager, "limit": limit}
    return templates.TemplateResponse(request, "job.html", context)


@router.get("/jobs/{job_id}/pages/{unit_id}.png")
async def page_image(
    request: Request, job_id: uuid.UUID, unit_id: uuid.UUID, service: ServiceDep
) -> Response:
    tenant = _tenant(request)
    if tenant is None:
        return Response(status_code=401)
    key, data = await run_in_threadpool(browse.page_media, service, tenant, job_id, unit_id)
    if clip.is_clip_key(key):  # a video's clip is a zip of frames, which no browser shows: draw them
        data = await run_in_threadpool(sheet.contact_sheet, data)
    return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})
