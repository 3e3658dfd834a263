"""The CLI's table of ordinary failures (api.cli.failures): the answers the e2e tests cannot provoke
from a healthy system (429, 503, 500, a proxy's HTML page), each one line with its exit code."""

from __future__ import annotations

import json

import httpx
import pytest

from api.cli.client import ApiError
from api.cli.failures import ExitCode, describe, run


def api_error(status: int, code: str, message: str, **extra: object) -> ApiError:
    return ApiError(status, json.dumps({"error": {"code": code, "message": message, **extra}}))


@pytest.mark.parametrize(
    ("status", "code", "exit_code"),
    [
        (429, "tenant_limit_exceeded", ExitCode.LIMITED),
        (503, "storage_unavailable", ExitCode.UNAVAILABLE),
        (413, "source_too_large", ExitCode.INVALID),
        (500, "error", ExitCode.ERROR),
    ],
)
def test_each_status_has_its_exit_code(status: int, code: str, exit_code: ExitCode) -> None:
    assert describe(api_error(status, code, "why")) == (f"{code}: why (HTTP {status})", exit_code)


def test_validation_details_show_the_first_problem_and_how_many_more() -> None:
    details = [{"loc": ["body", "items", 0, "uri"], "msg": "bad uri"}, {"loc": ["options"], "msg": "x"}]
    err = api_error(422, "invalid_request", "request failed validation", details=details)
    line = "invalid_request: request failed validation (body.items.0.uri: bad uri; 1 more) (HTTP 422)"
    assert describe(err) == (line, ExitCode.INVALID)


def test_a_body_of_another_shape_becomes_the_message() -> None:
    err = ApiError(502, "<html>Bad Gateway</html>")
    assert describe(err) == ("http_502: <html>Bad Gateway</html> (HTTP 502)", ExitCode.UNAVAILABLE)


def test_run_prints_one_line_and_exits_with_the_code(capsys: pytest.CaptureFixture[str]) -> None:
    def failing() -> None:
        raise api_error(429, "tenant_limit_exceeded", "too many\nunfinished jobs")

    with pytest.raises(SystemExit) as exited:
        run(failing)
    assert exited.value.code == ExitCode.LIMITED
    line = "vlmq: tenant_limit_exceeded: too many unfinished jobs (HTTP 429)\n"
    assert capsys.readouterr().err == line


def test_a_bug_keeps_its_traceback() -> None:
    def buggy() -> None:
        raise KeyError("not an ordinary failure")

    assert describe(KeyError("x")) is None
    with pytest.raises(KeyError):
        run(buggy)


def test_a_timeout_reading_the_api_is_unavailable() -> None:
    request = httpx.Request("GET", "http://api.example:8000/v1/jobs/1?x=1")
    line, exit_code = describe(httpx.ReadTimeout("timed out", request=request)) or ("", 0)
    assert line == "api_unreachable: no answer from the API at http://api.example:8000/: timed out"
    assert exit_code == ExitCode.UNAVAILABLE
