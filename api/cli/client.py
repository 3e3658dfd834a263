"""A small HTTP client for the vlmq API, used by the CLI and the demo."""

from __future__ import annotations

import json
import mimetypes
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from api.auth import dev_key_path, parse_keys
from jobs.config import Settings

TERMINAL = {"completed", "failed", "cancelled", "expired"}


class ApiError(RuntimeError):
    """An error answer of the API: its HTTP status and the body's {"error": {"code", "message",
    "details"?}} (a body of another shape, from a proxy say, becomes the message)."""

    def __init__(self, status: int, body: str) -> None:
        self.status = status
        self.code, self.message, self.details = f"http_{status}", body[:500], []
        try:
            err = json.loads(body)["error"]
            self.code, self.message = str(err["code"]), str(err["message"])
            self.details = list(err.get("details") or [])
        except (ValueError, KeyError, TypeError):
            pass
        super().__init__(f"HTTP {status}: {self.code}: {self.message}{self.first_problem()}")

    def first_problem(self) -> str:
        """The first validation problem, compactly (" (options.dpi: too small; 2 more)"), or ""."""
        try:
            d = self.details[0]
            where = ".".join(map(str, d["loc"]))
            more = f"; {len(self.details) - 1} more" if len(self.details) > 1 else ""
            return f" ({where}: {d['msg']}{more})"
        except (IndexError, KeyError, TypeError):
            return ""


class NoApiKey(RuntimeError):
    """Neither VLMQ_API__KEYS nor the development key file gives the CLI a key."""


def api_key_for(settings: Settings) -> str:
    if settings.api.keys is not None and settings.api.keys.get_secret_value().strip():
        return next(iter(parse_keys(settings.api.keys.get_secret_value())))
    path = dev_key_path(settings)
    if not path.exists():
        raise NoApiKey(f"set VLMQ_API__KEYS or start `vlmq api` once to create {path}")
    return path.read_text().strip()


class Client:
    def __init__(self, base_url: str, api_key: str, timeout: float = 60.0) -> None:
        self._http = httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=timeout
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Client:
        return cls(settings.api_base_url, api_key_for(settings))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ok(self, r: httpx.Response) -> httpx.Response:
        if r.status_code >= 400:
            raise ApiError(r.status_code, r.text)
        return r

    def submit_files(
        self,
        paths: list[Path],
        prompt: str | None = None,
        options: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        dataset: str | None = None,
    ) -> dict[str, Any]:
        files = [
            ("file", (p.name, p.read_bytes(), mimetypes.guess_type(p.name)[0] or "application/octet-stream"))
            for p in paths
        ]
        fields = {"prompt": prompt, "options": json.dumps(options or {}), "dataset": dataset}
        data = {k: v for k, v in fields.items() if v}
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._ok(self._http.post("/v1/jobs", files=files, data=data, headers=headers)).json()

    def submit(self, body: dict[str, Any], idempotency_key: str | None = None) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._ok(self._http.post("/v1/jobs", json=body, headers=headers)).json()

    def job(self, job_id: str | uuid.UUID) -> dict[str, Any]:
        return self._ok(self._http.get(f"/v1/jobs/{job_id}")).json()

    def events(self, job_id: str | uuid.UUID) -> Iterator[dict[str, Any]]:
        """The job's history, oldest first, every page of it."""
        after: int | None = 0
        while after is not None:
            page = self._ok(self._http.get(f"/v1/jobs/{job_id}/events", params={"after": after})).json()
            yield from page["data"]
            after = page["next"]

    def results(self, job_id: str | uuid.UUID, history: bool = False) -> Iterator[dict[str, Any]]:
        params = {"history": "true"} if history else {}
        r = self._ok(self._http.get(f"/v1/jobs/{job_id}/results", params=params))
        for line in r.text.split("\n"):  # not splitlines(): JSON leaves U+2028 and \x85 unescaped
            if line.strip():
                yield json.loads(line)

    def cancel(self, job_id: str | uuid.UUID) -> dict[str, Any]:
        return self._ok(self._http.post(f"/v1/jobs/{job_id}/cancel")).json()

    def retry(self, job_id: str | uuid.UUID) -> dict[str, Any]:
        return self._ok(self._http.post(f"/v1/jobs/{job_id}/retry")).json()

    def health(self) -> dict[str, Any]:
        return self._http.get("/healthz").json()

    def wait(
        self,
        job_id: str | uuid.UUID,
        on_update: Callable[[dict[str, Any]], None] | None = None,
        poll: float = 0.5,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Poll until the job is terminal; ``on_update`` sees every status read."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if on_update:
                on_update(job)
            if job["status"] in TERMINAL:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout} s")
            time.sleep(poll)
