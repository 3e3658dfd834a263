"""The API while Postgres is unreachable: 503 database_unavailable in the error shape, not a bare 500."""

from __future__ import annotations

import psycopg
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.exc import InterfaceError, OperationalError

from api.errors import install


def _app() -> FastAPI:
    app = FastAPI()
    install(app)

    @app.get("/operational")
    def operational() -> None:
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("port 5432 refused"))

    @app.get("/deadlock")
    def deadlock() -> None:
        raise OperationalError("UPDATE items", {}, psycopg.errors.DeadlockDetected("deadlock detected"))

    @app.get("/interface")
    def interface() -> None:
        raise InterfaceError("SELECT 1", {}, ConnectionError("closed"))

    return app


def test_a_database_that_cannot_be_reached_is_a_503_in_the_error_shape() -> None:
    """Found by the soak: during a Postgres restart every read answered a bare 500."""
    with TestClient(_app(), raise_server_exceptions=False) as client:
        for path in ("/operational", "/interface"):
            r = client.get(path)
            assert r.status_code == 503 and r.headers["retry-after"] == "5"
            assert r.json()["error"]["code"] == "database_unavailable"
            assert "5432" not in r.text  # the driver's details stay in the log


def test_a_transaction_postgres_rolled_back_for_another_says_so() -> None:
    """A deadlock Postgres broke is not an unreachable database: the client is told to send it again."""
    with TestClient(_app(), raise_server_exceptions=False) as client:
        r = client.get("/deadlock")
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert (
            r.json()["error"]["code"] == "database_conflict"
            and "send it again" in r.json()["error"]["message"]
        )
