"""Prep: fetch a source from S3, turn it into model-ready page images, store them, enqueue inference.

``iter_source`` picks the renderer from the bytes (``workers.media.sniff``), never from the name:
a PDF is rendered page by page, an image becomes its page(s), an office file is converted to PDF
first; a video becomes one unit, its frames sampled as GLM-4.1V expects (``workers.media.video``).
A new kind of input is one more entry in ``RENDERERS`` (and a rule in sniff).

Pages stream to the GPU (granularity "page", the default): the first ``limits.first_chunk_pages`` (1)
pages, then every ``limits.batch_size`` pages rendered and stored are recorded as units in their own
short transaction and dispatched at once (``workers.chunks``), so a 300-page PDF's first pages are
inferred while the rest are rendered. The rules when something breaks mid-stream (RELIABILITY.md,
*Streaming prep*):

* transient (S3, database, broker): the source goes back to wait and its retry renders it again from
  the start; units made before are found, not added again, and only READY ones are sent again;
* a page that cannot be rendered (or any permanent error after the first page): the pages rendered
  before it are recorded and go on to their results, the source fails with that page's error, and no
  later page is rendered; the job completes once those pages are done, and the results show the
  pages' lines and the source's own error line;
* the job cancelled or expired: rendering stops at the next chunk, the source is cancelled.

While a page renders, the pages before it may still be uploading (``workers.uploads``, at most
``VLMQ_MEDIA__UPLOAD_PAGES_AHEAD``, 4): a page is recorded, in page order, only once its image and text
layer are stored. The first chunk's last page is the exception to the overlap: its upload is waited for
before the next page renders, so the source's first chunk reaches the GPU one page's rendering sooner.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable, Iterable, Iterator

from jobs.adapters.db import as_vlmq_error
from jobs.adapters.storage import manifest_key, media_key, sha256_hex, text_key
from jobs.adapters.uris import read_source
from jobs.errors import PermanentError, RetryableError
from jobs.work import Claim, PreparedUnit, PrepWork
from workers.chunks import Chunks, Stopped
from workers.context import WorkerContext
from workers.heartbeat import Heartbeat
from workers.media import clip, manifest, sniff
from workers.media.images import image_pages
from workers.media.isolated import packed_clip, sample_packed
from workers.media.office import convert_to_pdf
from workers.media.page import RenderedPage, RenderOptions
from workers.media.pdf import iter_pdf_pages
from workers.media.video import Sampling, is_video, named_video
from workers.uploads import Uploads

log = logging.getLogger(__name__)


def _office(data: bytes, fmt: str, opts: RenderOptions) -> Iterator[RenderedPage]:
    pdf = convert_to_pdf(data, fmt, soffice=opts.soffice, timeout=opts.office_timeout_s)
    return iter_pdf_pages(pdf, opts)


# Each checks the whole file when called (raising its specific error), then yields the pages.
Renderer = Callable[[bytes, str, RenderOptions], Iterable[RenderedPage]]
RENDERERS: dict[str, Renderer] = {
    "pdf": lambda data, _, opts: iter_pdf_pages(data, opts),
    "image": lambda data, _, opts: image_pages(data, opts),  # a list: one page, or a TIFF's few
    "office": _office,
}


def prepare(ctx: WorkerContext, item_id: uuid.UUID | None = None) -> Claim[PrepWork]:
    """Prepare the source whose turn it is (jobs.scheduling.fairness; what a prep message means), or
    ``item_id`` itself. Idempotent: a claim that finds nothing waiting does nothing. The claimed source's
    lease is renewed by a heartbeat while it is prepared.

    Raises RetryableError only when the source was put back to be tried again.
    """
    if item_id is None:
        claim = ctx.service.begin_next_prep()
    else:
        work = ctx.service.begin_prep(item_id)
        claim = Claim([work] if work is not None else [])
    for work in claim.taken:
        with Heartbeat(ctx.service, [work.item_id], ctx.settings.queue.heartbeat_seconds):
            _prepare_claimed(ctx, work)
    return claim


def _prepare_claimed(ctx: WorkerContext, work: PrepWork) -> None:
    item_id = work.item_id
    limits = ctx.settings.limits
    chunks = Chunks(ctx.service, work, limits.batch_size, min(limits.first_chunk_pages, limits.batch_size))
    try:
        units = _prepare(ctx, work, chunks)
    except Stopped:
        log.info("item %s: its job stopped (or the item moved on) while it was prepared", item_id)
    except PermanentError as e:
        ctx.service.fail_items([item_id], e)
    except Exception as e:  # transient or unknown: retried up to its attempts, then failed with reason
        err = as_vlmq_error(e, RetryableError)
        if ctx.service.give_back([item_id], err):
            raise (err if isinstance(err, RetryableError) else RetryableError(str(err))) from e
    else:
        batches = ctx.service.finish_prep(item_id, units, chunks.pages or None, chunks.dispatched)
        for batch in batches:
            ctx.service.dispatcher.infer(batch, work.priority)
    ctx.service.finalize(work.job_id, [item_id])  # the item may be done (failed: attempts spent), the job too


def render_options(ctx: WorkerContext, work: PrepWork) -> RenderOptions:
    limits, media = ctx.settings.limits, ctx.settings.media
    return RenderOptions(
        longest_side=work.longest_side,
        dpi=work.dpi,
        pages=work.pages,
        password=work.password,
        max_pages=limits.max_pdf_pages,
        take=media.document_pages if work.granularity == "document" else None,
        max_pixels=media.max_image_pixels,
        max_render_side=media.max_render_side,
        name=work.uri.rsplit("/", 1)[-1],
        soffice=media.soffice,
        office_timeout_s=media.office_timeout_s,
    )


def _prepare(ctx: WorkerContext, work: PrepWork, chunks: Chunks) -> list[PreparedUnit]:
    """The units for finish_prep: all of them, or (pages streamed through ``chunks``) the last few."""
    data = read_source(ctx.store, ctx.settings, work.uri, work.tenant, ctx.settings.limits.max_source_bytes)
    sha, opts = sha256_hex(data), render_options(ctx, work)
    if is_video(data) or named_video(work.uri):  # a video is one unit: its sampled clip
        return [PreparedUnit(1, _store_clip(ctx, data, sha, opts.name), None, ())]
    pages = iter_source(data, opts)
    if work.granularity == "document":
        made = list(pages)
        return [_document(ctx, sha, opts, made, [_store_page(ctx, sha, opts, p) for p in made])]
    uploads = Uploads(ctx.settings.media.upload_pages_ahead)  # the next page renders while these store
    try:
        for n, page in enumerate(pages, 1):
            # The first chunk's last page is waited for: the chunk then goes to the GPU as soon as it
            # is stored, not one page's rendering later (the GPU may be idle waiting for it).
            store = functools.partial(_store_page, ctx, sha, opts, page)
            for unit in uploads.submit(store, wait=n == chunks.first_pages):
                chunks.add(unit)
        for unit in uploads.drain():
            chunks.add(unit)
    except PermanentError:
        for unit in uploads.drain():  # the pages before the bad one go on to their results (docstring)
            chunks.add(unit)
        chunks.flush()
        raise
    finally:
        uploads.close()
    return chunks.take_pending()


def iter_source(data: bytes, opts: RenderOptions) -> Iterable[RenderedPage]:
    """The pages of any supported file one at a time, after the checks that can refuse the whole file
    (raised by this call: a corrupt, encrypted, empty or over-limit file makes no page)."""
    family, fmt = sniff.family(data, opts.name)
    return RENDERERS[family](data, fmt, opts)


def _store_page(ctx: WorkerContext, sha: str, opts: RenderOptions, p: RenderedPage) -> PreparedUnit:
    key = ctx.store.put(media_key(sha, opts.size_tag, p.page), p.png, "image/png")
    text = _store_text(ctx, text_key(sha, p.page), p.text)
    return PreparedUnit(p.page, key, text, p.flags)


def _store_text(ctx: WorkerContext, key: str, text: str | None) -> str | None:
    """Every PDF page's text layer is stored, an empty one too: its link then tells "no text on the page"
    from "no text layer" (an image: None, nothing stored)."""
    return None if text is None else ctx.store.put(key, text.encode(), "text/plain; charset=utf-8")


def _document(
    ctx: WorkerContext, sha: str, opts: RenderOptions, pages: list[RenderedPage], units: list[PreparedUnit]
) -> PreparedUnit:
    """One unit showing every page (``opts.take`` at most were rendered): a manifest of their images."""
    numbers = [p.page for p in pages]
    sizes = [[p.width, p.height] for p in pages]
    key = manifest.write_manifest(
        ctx.store, manifest_key(sha, opts.size_tag, numbers), [u.media_key for u in units],
        pages=numbers, sizes=sizes,
    )  # fmt: skip
    layers = [p for p in pages if p.text is not None]  # all of them (a PDF) or none (images)
    text = "\n\n".join(f"--- page {p.page} ---\n{p.text}" for p in layers if p.text)
    tkey = _store_text(ctx, text_key(sha, numbers), text if layers else None)
    flags = tuple(dict.fromkeys(f for u in units for f in u.flags))  # every page's, once, in order
    return PreparedUnit(0, key, tkey, flags, tuple(numbers))


def _store_clip(ctx: WorkerContext, data: bytes, sha: str, name: str) -> str:
    sampling, media = Sampling.from_limits(ctx.settings.limits), ctx.settings.media
    if media.isolate_video_decoder:  # a decoder crash or hang fails this item, not the prep process
        packed = sample_packed(data, sampling, name, media.video_decode_timeout_s)
    else:
        packed = packed_clip(data, sampling, name)
    return ctx.store.put(clip.clip_key(sha, sampling.variant), packed, clip.CONTENT_TYPE)
