"""The error tree: the drawing in jobs.errors' docstring is the real hierarchy, codes are stable."""

from __future__ import annotations

import pickle

import pytest

import jobs.errors as errors
from jobs.errors import (
    CorruptMedia,
    EngineError,
    MediaError,
    PermanentError,
    RetryableError,
    StorageUnavailable,
    VlmqError,
)


def _drawn_tree() -> list[tuple[str, str, str]]:
    """(class name, code, parent name) for every branch of the docstring's drawing."""
    assert errors.__doc__
    parents = ["VlmqError"]
    rows = []
    for line in errors.__doc__.splitlines():
        if "── " not in line:
            continue
        depth = line.index("── ") // 4  # each level indents by 4 columns
        name, code = line.split("── ", 1)[1].split()[:2]
        del parents[depth + 1 :]
        rows.append((name, code.rstrip(":"), parents[depth]))
        parents.append(name)
    return rows


def _all_errors() -> list[type[VlmqError]]:
    return [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, VlmqError)]


def test_docstring_draws_the_real_tree() -> None:
    rows = _drawn_tree()
    assert {name for name, _, _ in rows} == {c.__name__ for c in _all_errors()} - {"VlmqError"}
    for name, code, parent in rows:
        cls = getattr(errors, name)
        assert (cls.__bases__, cls.code) == ((getattr(errors, parent),), code), name


def test_codes_are_unique_and_snake_case() -> None:
    codes = [c.code for c in _all_errors()]
    assert len(codes) == len(set(codes))
    assert all(code.replace("_", "").isalpha() and code.islower() for code in codes)


def test_every_leaf_is_either_retryable_or_permanent() -> None:
    for cls in _all_errors():
        if cls not in (VlmqError, PermanentError, RetryableError):
            assert issubclass(cls, PermanentError) != issubclass(cls, RetryableError), cls


@pytest.mark.parametrize(
    ("cls", "parent"),
    [(CorruptMedia, MediaError), (EngineError, RetryableError), (StorageUnavailable, VlmqError)],
)
def test_subclasses_are_caught_by_their_parents(cls: type[VlmqError], parent: type[VlmqError]) -> None:
    with pytest.raises(parent):
        raise cls("x")


def test_message_and_pickling() -> None:
    err = CorruptMedia("not a readable PDF: no %PDF- header")
    back = pickle.loads(pickle.dumps(err))  # Celery may carry errors between processes
    assert type(back) is CorruptMedia and back.message == str(back) == err.message
    assert (back.code, EngineError().message) == ("corrupt_media", "engine_error")
