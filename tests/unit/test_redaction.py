"""No secrets in logs: API keys, the S3 secret key and URL passwords are masked in messages, arguments
and tracebacks; uvicorn's access log keeps working through the filter."""

from __future__ import annotations

import io
import logging
import logging.config

import pytest
from pydantic import SecretStr

from jobs.adapters.redaction import RedactSecrets, install, redact, secrets_of, uvicorn_log_config
from jobs.config import ApiSettings, DbSettings, RedisSettings, S3Settings, Settings

SETTINGS = Settings(
    db=DbSettings(url="postgresql+psycopg://vlmq:db-pass-1234@db:5432/vlmq"),
    redis=RedisSettings(url="redis://:redis-pass-99@redis:6379/0"),
    s3=S3Settings(secret_access_key=SecretStr("s3-secret-abcd")),
    api=ApiSettings(keys=SecretStr("key-aaaa1111:tenant-a,key-bbbb2222:tenant-b")),
)
SECRETS = ["db-pass-1234", "redis-pass-99", "s3-secret-abcd", "key-aaaa1111", "key-bbbb2222"]


def _capture(flt: logging.Filter) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(flt)
    logger = logging.getLogger(f"test-redaction-{id(out)}")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return logger, out


def test_secrets_come_from_the_settings() -> None:
    assert set(SECRETS) <= set(secrets_of(SETTINGS))


def test_messages_arguments_and_tracebacks_are_masked() -> None:
    logger, out = _capture(RedactSecrets(secrets_of(SETTINGS)))
    logger.info("connecting to %s with key %s", SETTINGS.db.url, "key-aaaa1111")
    logger.info("settings: %s", {"secret": "s3-secret-abcd"})
    try:
        raise RuntimeError(f"cannot reach {SETTINGS.redis.url}")
    except RuntimeError:
        logger.exception("failed")
    text = out.getvalue()
    assert not [s for s in SECRETS if s in text], text
    assert "postgresql+psycopg://vlmq:***@db:5432/vlmq" in text and "redis://:***@redis" in text
    assert "RuntimeError" in text and "Traceback" in text  # the traceback is kept, masked


def test_unknown_url_passwords_and_auth_headers_are_masked_too() -> None:
    assert redact("amqp://u:hunter2@mq/ and Authorization: Bearer abc.def") == (
        "amqp://u:***@mq/ and Authorization: Bearer ***"
    )
    assert redact("{'x-api-key': 'k-123'}") == "{'x-api-key': '***'}"


def test_install_covers_existing_handlers() -> None:
    logger, out = _capture(logging.Filter())  # a handler made before install
    flt = install(SETTINGS)
    try:
        logger.warning("key-bbbb2222")
        assert out.getvalue().strip() == "***"
    finally:
        for h in logger.handlers:
            h.removeFilter(flt)


def test_uvicorn_access_log_still_formats(capsys: pytest.CaptureFixture[str]) -> None:
    names = ("", "uvicorn", "uvicorn.access", "uvicorn.error")
    saved = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).level) for n in names}
    logging.config.dictConfig(uvicorn_log_config(SETTINGS))
    try:
        access = logging.getLogger("uvicorn.access")
        access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET", "/v1/jobs?k=key-aaaa1111", "1.1", 200)
        err = capsys.readouterr()
        assert '"GET /v1/jobs?k=*** HTTP/1.1" 200' in err.out + err.err
    finally:
        for n, (handlers, level) in saved.items():
            logging.getLogger(n).handlers[:] = handlers
            logging.getLogger(n).setLevel(level)
