"""Prep: fetch a source from S3, turn it into model-ready page images, store them, enqueue inference."""

from __future__ import annotations

import logging
import uuid

from PIL import Image

from jobs.errors import CorruptMedia, PermanentError, RetryableError, VlmqError
from jobs.storage import media_key, sha256_hex
from workers.context import WorkerContext
from workers.media import clip
from workers.media.images import decode_image, encode_png
from workers.media.pdf import RenderedPage, render_pdf
from workers.media.video import Sampling, is_video, named_video, sample_video

log = logging.getLogger(__name__)

_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"II*\x00", b"MM\x00*", b"RIFF")


def prepare(ctx: WorkerContext, item_id: uuid.UUID) -> None:
    """Idempotent: a duplicate message finds the item already claimed or done and does nothing.

    Raises RetryableError only when the item was put back to be tried again.
    """
    work = ctx.service.begin_prep(item_id)
    if work is None:
        log.info("item %s not queued (duplicate message or done); skipping", item_id)
        return
    try:
        pages = _render(ctx, work.uri, work.longest_side)
    except PermanentError as e:
        ctx.service.fail_items([item_id], e)
        ctx.service.finalize(work.job_id)
        return
    except Exception as e:  # transient or unknown: retried up to max_attempts, then failed with reason
        _give_back(ctx, item_id, work.job_id, e)
        raise
    for batch in ctx.service.finish_prep(item_id, pages):
        ctx.service.dispatcher.infer(batch)
    ctx.service.finalize(work.job_id)


def _render(ctx: WorkerContext, uri: str, longest_side: int) -> list[tuple[int, str]]:
    limits = ctx.settings.limits
    data = ctx.store.read_uri(uri, max_bytes=limits.max_source_bytes)
    sha = sha256_hex(data)
    if is_video(data) or named_video(uri):  # a video is one unit: its sampled clip
        return [(1, _store_clip(ctx, data, sha, uri))]
    pages = render_source(data, longest_side=longest_side, max_pages=limits.max_pdf_pages)
    return [(p.page, ctx.store.put(media_key(sha, longest_side, p.page), p.png, "image/png")) for p in pages]


def render_source(data: bytes, *, longest_side: int, max_pages: int) -> list[RenderedPage]:
    """A PDF becomes its pages; an image becomes one page, scaled down to the longest side."""
    if data[:1024].lstrip().startswith(b"%PDF") or b"%PDF-" in data[:1024]:
        return render_pdf(data, longest_side=longest_side, max_pages=max_pages)
    if data.startswith(_IMAGE_MAGIC):
        return [_image_page(decode_image(data), longest_side)]
    raise CorruptMedia("not a PDF or a supported image (PNG, JPEG, GIF, TIFF, WebP)")


def _image_page(img: Image.Image, longest_side: int) -> RenderedPage:
    scale = longest_side / max(img.size)
    if scale < 1:  # never upscale: it adds vision tokens and no information
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))))
    return RenderedPage(page=1, png=encode_png(img), width=img.width, height=img.height)


def _store_clip(ctx: WorkerContext, data: bytes, sha: str, uri: str) -> str:
    sampling = Sampling.from_limits(ctx.settings.limits)
    sampled = sample_video(data, sampling, name=uri.rsplit("/", 1)[-1])
    return ctx.store.put(clip.clip_key(sha, sampling.variant), clip.pack(sampled), clip.CONTENT_TYPE)


def _give_back(ctx: WorkerContext, item_id: uuid.UUID, job_id: uuid.UUID, error: Exception) -> None:
    err = error if isinstance(error, VlmqError) else RetryableError(f"{type(error).__name__}: {error}")
    if not ctx.service.give_back([item_id], err):
        ctx.service.finalize(job_id)  # attempts exhausted: the item failed, the job may be done
