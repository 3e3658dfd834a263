"""No secrets in logs: a logging filter that masks API keys, the S3 secret key and database/Redis
passwords in every record (message, arguments and traceback), wherever the record comes from.

``install(settings)`` puts it on every handler configured so far (call it after logging is set up);
``uvicorn_log_config(settings)`` is uvicorn's own logging config with the filter on its handlers.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote, urlsplit

from jobs.config import Settings

MASK = "***"
# Passwords in URLs (scheme://user:password@host) and credentials in headers, whoever logs them.
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^/\s:@]*:)(?P<pw>[^@\s/]+)(?=@)", re.I)
_HEADER = re.compile(
    r"(?P<head>(authorization|x-api-key)['\"]?\s*[:=]\s*['\"]?(bearer\s+)?)(?P<pw>[^\s'\",]+)", re.I
)


def secrets_of(settings: Settings) -> list[str]:
    """The configured secret values: API keys, the S3 secret key, the passwords in the server URLs."""
    found: list[str] = []
    if settings.api.keys is not None:
        pairs = settings.api.keys.get_secret_value().split(",")
        found += [p.partition(":")[0].strip() for p in pairs]
    if settings.s3.secret_access_key is not None:
        found.append(settings.s3.secret_access_key.get_secret_value())
    for url in (settings.db.url, settings.redis.url):
        password = urlsplit(url).password if url else None
        if password:
            found += [password, unquote(password)]
    return sorted({s for s in found if len(s) >= 4}, key=len, reverse=True)  # longest first


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    for secret in secrets:
        text = text.replace(secret, MASK)
    text = _URL_PASSWORD.sub(lambda m: m.group("head") + MASK, text)
    return _HEADER.sub(lambda m: m.group("head") + MASK, text)


class RedactSecrets(logging.Filter):
    """Rewrites each record in place: its message, its arguments and its traceback text, masked.

    Arguments keep their places (formatters such as uvicorn's access log unpack them): strings are
    masked, numbers kept, any other object replaced by its masked text."""

    def __init__(self, secrets: Iterable[str] = (), name: str = "") -> None:
        super().__init__(name)
        self.secrets = list(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(str(record.msg), self.secrets)
        if isinstance(record.args, tuple):
            record.args = tuple(self._arg(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: self._arg(v) for k, v in record.args.items()}
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self.secrets)
        return True

    def _arg(self, value: object) -> object:
        if value is None or isinstance(value, int | float):
            return value
        return redact(str(value), self.secrets)


def install(settings: Settings) -> RedactSecrets:
    """Put the filter on every handler of the root logger and of every logger that has its own."""
    flt = RedactSecrets(secrets_of(settings))
    loggers = [logging.getLogger(), *(logging.getLogger(n) for n in list(logging.root.manager.loggerDict))]
    for logger in loggers:
        for handler in logger.handlers:
            if not any(isinstance(f, RedactSecrets) for f in handler.filters):
                handler.addFilter(flt)
    return flt


def uvicorn_log_config(settings: Settings) -> dict[str, Any]:
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact"] = {"()": RedactSecrets, "secrets": secrets_of(settings)}
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).append("redact")
    # vlmq's own loggers propagate to the root: give it uvicorn's handler, with the filter, too.
    config["loggers"][""] = {"handlers": ["default"], "level": "INFO"}
    return config
