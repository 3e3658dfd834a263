"""What the inference worker reads of a unit's pages (workers.infer._read_media): decoded pages for an
engine that needs the pixels, only the PNG headers (sizes) for one that sends the stored pages by key."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from jobs.errors import CorruptMedia
from tests.fakes import MemoryStore
from workers.infer import _read_media
from workers.media import manifest
from workers.media.clip import VideoClip, clip_key, pack
from workers.media.images import PNG_HEADER, encode_png, png_size


class Recording(MemoryStore):
    """Records each read: (key, bytes asked for; None: the whole object)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[tuple[str, int | None]] = []

    def get(self, key: str) -> bytes:
        self.reads.append((key, None))
        return self.objects[key]

    def get_start(self, key: str, n: int) -> bytes:
        self.reads.append((key, n))
        return self.objects[key][:n]


def stored(*sizes: tuple[int, int]) -> tuple[Recording, list[str]]:
    store = Recording()
    keys = [store.put(f"media/s/page-{n:05d}.png", encode_png(Image.new("RGB", wh, "white"))) for n, wh in
            enumerate(sizes, 1)]  # fmt: skip
    return store, keys


def test_pages_by_key_are_read_to_their_header_only() -> None:
    store, (key,) = stored((800, 600))
    media = _read_media(store, key, pixels=False)
    assert (media.keys, media.images, media.size) == ((key,), (), (800, 600))
    assert store.reads == [(key, PNG_HEADER)]


def test_decoded_pages_carry_their_keys_too() -> None:
    store, (key,) = stored((80, 60))
    media = _read_media(store, key, pixels=True)
    assert store.reads == [(key, None)]
    assert media.keys == (key,) and [i.size for i in media.images] == [(80, 60)] and media.size == (80, 60)


def test_a_document_s_pages_are_its_manifest_s_keys_in_order() -> None:
    store, keys = stored((80, 60), (60, 80))
    doc = manifest.write_manifest(store, "media/s/pages-1-2.json", keys[::-1])
    media = _read_media(store, doc, pixels=False)
    assert media.keys == tuple(keys[::-1]) and media.size is None  # boxes in pixels: one page only
    assert store.reads == [(doc, None), *((k, PNG_HEADER) for k in keys[::-1])]


def test_a_page_that_is_not_a_png_fails_its_unit() -> None:
    store = MemoryStore()
    store.put("media/s/page-00001.png", b"GIF89a" + bytes(40))
    with pytest.raises(CorruptMedia, match="not a PNG"):
        _read_media(store, "media/s/page-00001.png", pixels=False)
    with pytest.raises(CorruptMedia):
        png_size(encode_png(Image.new("RGB", (8, 8)))[: PNG_HEADER - 1])  # cut short


@pytest.mark.parametrize("pixels", [True, False])
def test_a_video_is_its_clip_either_way(pixels: bool) -> None:
    store = Recording()
    frames = np.zeros((2, 8, 8, 3), np.uint8)
    key = store.put(clip_key("s", "v"), pack(VideoClip(frames, 2.0, (0, 1), 2, 1.0)))
    media = _read_media(store, key, pixels)  # its frames travel in the request: nothing to presign
    assert media.video is not None and media.video.frames.shape == (2, 8, 8, 3)
    assert (media.keys, media.images, store.reads) == ((), (), [(key, None)])
