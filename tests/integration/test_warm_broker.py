"""The API opens its broker connection at start, beside the startup, so the first job after a start
does not wait for it; an unreachable broker at that moment is not an error."""

from __future__ import annotations

import logging
import threading

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from jobs.adapters.dispatch import CeleryDispatcher
from jobs.config import Settings


class _Warmed:
    def __init__(self) -> None:
        self.done = threading.Event()

    def warm(self) -> None:
        self.done.set()


def test_the_api_warms_its_dispatcher_when_it_starts(settings: Settings) -> None:
    app = create_app(settings)
    probe = _Warmed()
    app.state.service.dispatcher = probe
    assert not probe.done.is_set()
    with TestClient(app):
        assert probe.done.wait(5), "the API did not open its broker connection at start"


def test_warming_against_an_unreachable_broker_only_says_so(caplog: pytest.LogCaptureFixture) -> None:
    dispatcher = CeleryDispatcher(Settings(_env_file=None, redis={"url": "redis://127.0.0.1:1/0"}))  # type: ignore[call-arg]
    with caplog.at_level(logging.INFO, logger="jobs.adapters.dispatch"):
        dispatcher.warm()  # returns (after one failed try) instead of raising
    assert "broker not reachable yet" in caplog.text
