"""API keys. ``VLMQ_API__KEYS="key1:tenant-a,key2:tenant-b"``; with none configured a development key
is made once, kept in ``.vlmq/dev-api-key`` (mode 600) for the CLI, and printed by ``vlmq api``."""

from __future__ import annotations

import hmac
import os
import re
import secrets
from pathlib import Path

from jobs.config import Settings

DEV_TENANT = "dev"
# A tenant's name is part of its storage prefix (uploads/TENANT/): no "/" (tenant "a" must not own the
# prefix of tenant "a/b"), nothing S3 or a shell would read otherwise; the tenant columns hold 64.
TENANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def dev_key_path(settings: Settings) -> Path:
    return settings.state_dir / "dev-api-key"


def ensure_dev_key(settings: Settings) -> str:
    path = dev_key_path(settings)
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = "vlmq-dev-" + secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key


def parse_keys(raw: str) -> dict[str, str]:
    keys: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in raw.split(","))):
        key, sep, tenant = pair.partition(":")
        if not sep or not key or not tenant:
            raise ValueError("VLMQ_API__KEYS must be comma-separated key:tenant pairs")
        if not TENANT_NAME.match(tenant):
            raise ValueError(
                f"VLMQ_API__KEYS: tenant {tenant!r} is not a valid name (letters, digits, '.', '_', '-'; "
                "at most 64; no '/')"
            )
        keys[key] = tenant
    return keys


def load_keys(settings: Settings) -> tuple[dict[str, str], bool]:
    """(key -> tenant, whether it is the development key)."""
    if settings.api.keys is not None and settings.api.keys.get_secret_value().strip():
        return parse_keys(settings.api.keys.get_secret_value()), False
    return {ensure_dev_key(settings): DEV_TENANT}, True


def tenant_for(keys: dict[str, str], presented: str | None) -> str | None:
    if not presented:
        return None
    # Constant-time comparison against every key, so timing does not reveal a prefix match.
    found = None
    for key, tenant in keys.items():
        if hmac.compare_digest(key.encode(), presented.encode()):
            found = tenant
    return found
