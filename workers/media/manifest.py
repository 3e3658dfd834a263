"""Units whose media is several images (granularity "document": pages in one prompt).

A unit's ``media_key`` names either one page image, or a small JSON manifest (key ending ``.json``)
listing the image keys in prompt order: ``{"images": [key, ...], "pages": [1, 2, ...]}``. Other unit
kinds with several images (video frames) can use the same form and add their own fields.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from jobs.adapters.storage import BlobStore
from jobs.errors import CorruptMedia

SUFFIX = ".json"


def write_manifest(store: BlobStore, key: str, images: Sequence[str], **fields: Any) -> str:
    body = json.dumps({"images": list(images), **fields}, sort_keys=True).encode()
    return store.put(key, body, "application/json")


def image_keys(store: BlobStore, media_key: str) -> list[str]:
    """The image keys behind a unit's media key, in prompt order."""
    if not media_key.endswith(SUFFIX):
        return [media_key]
    try:
        keys = json.loads(store.get(media_key))["images"]
    except (ValueError, KeyError, TypeError) as e:
        raise CorruptMedia(f"unit manifest {media_key} is unreadable: {e}") from e
    if not keys or not all(isinstance(k, str) for k in keys):
        raise CorruptMedia(f"unit manifest {media_key} lists no images")
    return list(keys)
