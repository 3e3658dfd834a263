"""Alembic environment: the URL comes from the config (sqlalchemy.url set by alembic_config) or from
jobs.config (VLMQ_DB__URL); the target metadata is jobs.models' (and jobs.reprocessing.models', which
shares its Base)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from jobs.adapters.db import database_url
from jobs.config import get_settings
from jobs.models import Base
from jobs.reprocessing import models as _reprocessing  # noqa: F401 - its tables join Base.metadata

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or database_url(get_settings())


def run_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    engine = create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=target_metadata, compare_type=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
