"""How a `vlmq` command that fails for an ordinary reason (an API error answer, the API unreachable, no
API key, a wait that timed out) ends: one line on stderr, ``vlmq: CODE: MESSAGE``, and an exit code
from the one table below (README, "Using it", lists it). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from enum import IntEnum

import httpx

from api.cli.client import ApiError, NoApiKey


class ExitCode(IntEnum):
    ERROR = 1  # a server error, a job that did not complete, a wait that timed out
    USAGE = 2  # typer's own: an unknown option, a missing argument, a file that does not exist
    NOT_FOUND = 3  # 404: no such job (or another tenant's)
    CONFLICT = 4  # 409: idempotency key reused with another body, nothing to retry
    INVALID = 5  # 400, 413, 422: the request was refused as it is
    UNAUTHORIZED = 6  # 401, 403, or no API key at all
    LIMITED = 7  # 429: rate or tenant limit; try again later
    UNAVAILABLE = 8  # the API unreachable, or 502/503/504 (a server it needs is down)


BY_STATUS = {
    400: ExitCode.INVALID, 401: ExitCode.UNAUTHORIZED, 403: ExitCode.UNAUTHORIZED,
    404: ExitCode.NOT_FOUND, 409: ExitCode.CONFLICT, 413: ExitCode.INVALID, 422: ExitCode.INVALID,
    429: ExitCode.LIMITED, 502: ExitCode.UNAVAILABLE, 503: ExitCode.UNAVAILABLE, 504: ExitCode.UNAVAILABLE,
}  # fmt: skip


def _where(e: httpx.TransportError) -> str:
    try:
        return f" at {e.request.url.copy_with(path='/', query=None)}"
    except RuntimeError:  # httpx raises it when the error carries no request
        return ""


def describe(e: BaseException) -> tuple[str, ExitCode] | None:
    """The one line and the exit code for an ordinary failure; None for anything else."""
    if isinstance(e, ApiError):
        line = f"{e.code}: {e.message}{e.first_problem()} (HTTP {e.status})"
        return line, BY_STATUS.get(e.status, ExitCode.ERROR)
    if isinstance(e, httpx.TransportError):  # refused, timed out, reset: the API is not answering
        line = f"api_unreachable: no answer from the API{_where(e)}: {str(e) or type(e).__name__}"
        return line, ExitCode.UNAVAILABLE
    if isinstance(e, NoApiKey):
        return f"no_api_key: {e}", ExitCode.UNAUTHORIZED
    if isinstance(e, TimeoutError):  # `watch --timeout`, `submit --wait`: the job is still going
        return f"timeout: {e}", ExitCode.ERROR
    return None


def run(command: Callable[[], object]) -> None:
    """Run the CLI; an ordinary failure becomes its one line and exit code instead of a traceback."""
    try:
        command()
    except Exception as e:
        found = describe(e)
        if found is None:
            raise
        line, code = found
        sys.stderr.write("vlmq: " + " ".join(line.split()) + "\n")  # one line, whatever the message holds
        sys.exit(code)
