import pytest

from api.auth import DEV_TENANT, ensure_dev_key, load_keys, parse_keys, tenant_for
from jobs.config import Settings


def test_parse_keys() -> None:
    assert parse_keys("k1:a, k2:b,") == {"k1": "a", "k2": "b"}
    with pytest.raises(ValueError, match="key:tenant"):
        parse_keys("k1")


def test_tenant_for() -> None:
    keys = {"k1": "a", "k2": "b"}
    assert tenant_for(keys, "k2") == "b"
    assert tenant_for(keys, "k3") is None
    assert tenant_for(keys, None) is None


def test_dev_key_is_made_once_and_private(tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = Settings(state_dir=tmp_path, _env_file=None)  # type: ignore[call-arg]
    keys, is_dev = load_keys(s)
    assert is_dev and list(keys.values()) == [DEV_TENANT]
    assert ensure_dev_key(s) == next(iter(keys))
    assert (tmp_path / "dev-api-key").stat().st_mode & 0o077 == 0


def test_configured_keys_win(tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = Settings(state_dir=tmp_path, api={"keys": "abc:t1"}, _env_file=None)  # type: ignore[call-arg]
    assert load_keys(s) == ({"abc": "t1"}, False)
    assert not (tmp_path / "dev-api-key").exists()
