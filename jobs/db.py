"""One SQLAlchemy engine and session factory per process, built from the settings."""

from __future__ import annotations

from functools import lru_cache

from sqlalchemy import create_engine
from sqlalchemy.orm import Session, sessionmaker

from jobs.config import Settings, get_settings


def database_url(settings: Settings) -> str:
    if not settings.db.url:
        raise RuntimeError(
            "no database configured: set VLMQ_DB__URL (postgresql+psycopg://user@host:5432/db) "
            "or run `vlmq dev up`, which starts an embedded PostgreSQL and writes .vlmq/dev.env"
        )
    return settings.db.url


@lru_cache(maxsize=4)
def _factory(url: str, pool_size: int, echo: bool) -> sessionmaker[Session]:
    # pool_pre_ping: a restarted Postgres must not break a long-lived worker's next task.
    engine = create_engine(url, pool_size=pool_size, pool_pre_ping=True, echo=echo)
    return sessionmaker(engine, expire_on_commit=False)


def session_factory(settings: Settings | None = None) -> sessionmaker[Session]:
    s = settings or get_settings()
    return _factory(database_url(s), s.db.pool_size, s.db.echo)
