"""The development model's defaults (jobs.config): on the tiny random-weight model a first job is fast
(few output tokens, no retry ladder), and whatever the user set wins."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.config import DEV_MAX_NEW_TOKENS, DEV_MODEL_MARKER, ModelSettings, Settings

GENERAL = (1024, [0.6, 1.0])  # max_new_tokens and retry_temperatures for any other model


@pytest.fixture(autouse=True)
def _nothing_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("PATH", "ENGINE", "MAX_NEW_TOKENS", "RETRY_TEMPERATURES"):
        monkeypatch.delenv(f"VLMQ_MODEL__{key}", raising=False)


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    (tmp_path / DEV_MODEL_MARKER).write_text('{"seed": 0, "taught": []}')  # what build_tiny_model writes
    return tmp_path


def _settings(**model: object) -> ModelSettings:
    """The model settings as a process builds them: the environment, then ``model`` given in code."""
    return Settings(_env_file=None, model=model).model  # type: ignore[call-arg, arg-type]


def _model(**model: object) -> tuple[int, list[float]]:
    m = _settings(**model)
    return m.max_new_tokens, m.retry_temperatures


def test_the_tiny_model_gets_few_tokens_and_no_retry_ladder(tiny: Path) -> None:
    assert _model(path=str(tiny)) == (DEV_MAX_NEW_TOKENS, [])
    assert _model(path=str(tiny), engine="vllm") == (DEV_MAX_NEW_TOKENS, [])


def test_other_models_keep_the_general_defaults(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    assert _model(path=str(tmp_path_factory.mktemp("real-weights"))) == GENERAL
    assert _model(path=str(tiny), engine="fake") == GENERAL  # the fake engine loads no model


def test_what_the_user_set_wins(tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _model(path=str(tiny), max_new_tokens=1024) == (1024, [])  # even the general default's value
    assert _model(path=str(tiny), retry_temperatures=[0.6, 1.0]) == (DEV_MAX_NEW_TOKENS, [0.6, 1.0])
    monkeypatch.setenv("VLMQ_MODEL__PATH", str(tiny))
    monkeypatch.setenv("VLMQ_MODEL__MAX_NEW_TOKENS", "300")
    monkeypatch.setenv("VLMQ_MODEL__RETRY_TEMPERATURES", "[0.7]")
    assert _model() == (300, [0.7])


def test_the_worker_notice_says_what_the_model_is_and_costs(tiny: Path) -> None:
    assert _settings(path=str(tiny)).development_notice() == (
        f"development model ({tiny}): random weights, answers are not meaningful; "
        f"max_new_tokens {DEV_MAX_NEW_TOKENS}, no retry ladder; point VLMQ_MODEL__PATH at real weights"
    )
    assert _settings(path=str(tiny), engine="fake").development_notice() is None
