"""One SQLAlchemy engine and session factory per process, built from the settings."""

from __future__ import annotations

from functools import cache

from sqlalchemy import create_engine
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from jobs.config import Settings, get_settings
from jobs.errors import DatabaseUnavailable, VlmqError

# What a lost or restarting Postgres raises: transport errors, retried with backoff like S3 outages.
DB_UNAVAILABLE = (OperationalError, InterfaceError)


def database_url(settings: Settings) -> str:
    if not settings.db.url:
        raise RuntimeError(
            "no database configured: set VLMQ_DB__URL (postgresql+psycopg://user@host:5432/db) "
            "or run `vlmq dev up`, which starts an embedded PostgreSQL and writes .vlmq/dev.env"
        )
    return settings.db.url


# Unbounded: a process uses one database (the test suite a few); an engine evicted from a bounded cache
# was garbage-collected with its pooled connections still open (psycopg's ResourceWarning).
@cache
def _factory(url: str, pool_size: int, echo: bool) -> sessionmaker[Session]:
    # pool_pre_ping: a restarted Postgres must not break a long-lived worker's next task.
    engine = create_engine(url, pool_size=pool_size, pool_pre_ping=True, echo=echo)
    return sessionmaker(engine, expire_on_commit=False)


def as_vlmq_error(e: Exception, default: type[VlmqError]) -> VlmqError:
    """``e`` as a vlmq error: itself, DatabaseUnavailable for a database that cannot be reached, else
    ``default`` with the original type and message."""
    if isinstance(e, VlmqError):
        return e
    if isinstance(e, DB_UNAVAILABLE):
        return DatabaseUnavailable(f"database unavailable: {type(e).__name__}: {str(e)[:500]}")
    return default(f"{type(e).__name__}: {e}")


def session_factory(settings: Settings | None = None) -> sessionmaker[Session]:
    s = settings or get_settings()
    return _factory(database_url(s), s.db.pool_size, s.db.echo)
