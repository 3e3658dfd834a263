"""Jobs submitted as a source instead of a list (issue 25): an S3 prefix with a glob
(``s3://corpus/pdfs/**/*.pdf``) or a manifest object of URIs. The job's listing (models.Listing) is read
a page at a time by the prep workers (task ``vlmq.list_source``): each page's objects become the job's
sources in one transaction with the cursor's advance, and go to prep at once, so inference starts
while the listing goes on and no process holds more than one page.

- Nothing twice: the cursor moves by compare-and-set on ``pages`` (jobs.transitions.advance_listing),
  so a page listed twice (a redelivered message, the sweeper's resend) is stored once; a manifest's
  repeated ``custom_id`` is stored once too (the first line wins).
- Nothing lost: a listing whose messages stopped is sent again by the sweeper; while its job is active
  the job counts it as open (jobs.repository.open_items), so the job cannot complete half listed.
- Paced: while the job holds ``listing.max_open_items`` items waiting or in flight, the listing pauses;
  a corpus of millions never floods Postgres or the queues, and other jobs keep their turn.
- Incremental: an object this tenant already has a succeeded source for, with the same URI (and, from
  a prefix, the same ETag), prompt version, options and model, is counted as ``skipped``, not stored.

Lock order (jobs.transitions): the job's finalizer lock, the listing, new items, the job's row. The
finalizer lock first: a close of the job cannot run between this page's check that the job is active
and its commit, which would leave the page's items queued in an ended job.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from pydantic import ValidationError
from sqlalchemy import and_, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, sessionmaker

from jobs import repository as repo
from jobs import transitions
from jobs.adapters import listing as s3list
from jobs.adapters import manifests, uris
from jobs.clock import sql_now
from jobs.config import Settings
from jobs.errors import InvalidInput, InvalidManifestLine, VlmqError
from jobs.models import OPEN_ITEM_STATES, Item, Job, Listing
from jobs.prompts import presets
from jobs.schemas import CUSTOM_ID_MAX, ItemOptions, ListingOut, SourceIn, check_custom_id
from jobs.status import JOB_ACTIVE, ItemStatus, JobStatus, names

log = logging.getLogger(__name__)

BAD_LINE = InvalidManifestLine.code


@dataclass(frozen=True)
class Found:
    """One object or manifest line: a source to store, or (``error``) a line to store failed."""

    custom_id: str
    uri: str
    etag: str | None = None
    prompt: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    error: VlmqError | None = None


@dataclass(frozen=True)
class Fetched:
    found: list[Found]
    cursor: dict[str, Any] | None  # None: this was the last page


@dataclass(frozen=True)
class Step:
    """What the task does after a page: prepare ``sources``; list again in ``again_in`` seconds (0: now;
    None: the listing is over, and the job may be finalized)."""

    sources: list[uuid.UUID]
    priority: str
    again_in: float | None


def start(s: Session, job_id: uuid.UUID, source: SourceIn) -> None:
    """In the submission's transaction: the job's listing, at its first page."""
    s.add(Listing(job_id=job_id, kind=source.kind, uri=source.uri, incremental=source.incremental))


def check(client: Any, policy: uris.UriPolicy, tenant: str, source: SourceIn) -> None:
    """At submission, so that a typo is a 422 now and not a failed job later: the tenant may name the
    source, and it can be read (the bucket exists, the manifest object too)."""
    if source.prefix is not None:
        pattern = s3list.parse_pattern(source.prefix)
        policy.check(f"s3://{pattern.bucket}/{pattern.list_prefix}*", tenant)
        s3list.list_page(client, pattern, None, limit=1)
    else:
        policy.check(source.uri, tenant)
        manifests.manifest_head(client, source.uri)


def progress(s: Session, job_id: uuid.UUID) -> ListingOut | None:
    """What GET /v1/jobs/{id} and ``vlmq watch`` show of a job's listing (None: a job of listed items)."""
    li = s.get(Listing, job_id)
    if li is None:
        return None
    kind: Literal["prefix", "manifest"] = "prefix" if li.kind == "prefix" else "manifest"
    return ListingOut(
        kind=kind, uri=li.uri, status=li.status, discovered=li.discovered, skipped=li.skipped,
        pages=li.pages, error=li.error,
    )  # fmt: skip


def failed_empty(s: Session, job_id: uuid.UUID) -> str | None:
    """Why the job's listing failed before it found anything (the job itself could not run: it ends
    failed with this error); None when it did not."""
    li = s.get(Listing, job_id)
    if li is None or li.status != "failed" or li.discovered:
        return None
    return f"listing {li.uri} failed: {li.error}"


def key_id(uri: str) -> str:
    """A listed object's custom_id: its key, or for a key longer than a custom_id may be, its start and
    a digest of the whole (unique, and still readable)."""
    key = uri.split("/", 3)[3]
    if len(key) <= CUSTOM_ID_MAX:
        return key
    return f"{key[: CUSTOM_ID_MAX - 18]}~{hashlib.sha256(key.encode()).hexdigest()[:16]}"


class Lister:
    """Lists one page of a job's source and stores it (``next_page``)."""

    def __init__(self, sessions: sessionmaker[Session], client: Any, settings: Settings) -> None:
        self.sessions = sessions
        self.client = client
        self.settings = settings
        self.policy = uris.UriPolicy.from_settings(settings)

    def next_page(self, job_id: uuid.UUID) -> Step:
        with self.sessions() as s:
            listing, job = s.get(Listing, job_id), repo.get_job(s, job_id)
            if listing is None or job is None or listing.status != "listing":
                return Step([], "normal", None)
            seen, cursor, priority = listing.pages, dict(listing.cursor), job.priority
            if job.status not in JOB_ACTIVE:
                return self._end(job_id, seen, "stopped", f"the job is {job.status}", priority)
            if self._paused(s, job_id):
                return self._pause(s, job_id, priority)
        try:
            fetched = self._fetch(listing, job, cursor)
        except InvalidInput as e:  # the source went away or became unreadable: the job ends with the rest
            return self._end(job_id, seen, "failed", str(e), priority)
        with self.sessions() as s, s.begin():
            ids = self._store(s, job_id, seen, fetched)
        if ids is None:  # another delivery stored this page; its chain goes on, this one stops
            return Step([], priority, None)
        return Step(ids, priority, 0.0 if fetched.cursor is not None else None)

    def _paused(self, s: Session, job_id: uuid.UUID) -> bool:
        cap = self.settings.listing.max_open_items
        if not cap:
            return False
        open_ = select(Item.id).where(Item.job_id == job_id, Item.status.in_(OPEN_ITEM_STATES))
        return int(s.scalar(select(func.count()).select_from(open_.limit(cap).subquery())) or 0) >= cap

    def _pause(self, s: Session, job_id: uuid.UUID, priority: str) -> Step:
        """Touched, so that the sweeper does not take a paused listing for a lost one."""
        s.execute(update(Listing).where(Listing.job_id == job_id).values(updated_at=sql_now()))
        s.commit()
        return Step([], priority, self.settings.listing.pause_seconds)

    def _end(self, job_id: uuid.UUID, seen: int, status: str, error: str | None, priority: str) -> Step:
        with self.sessions() as s, s.begin():
            if transitions.end_listing(s, job_id, seen, status, error):
                repo.add_event(s, job_id, f"listing.{status}", detail=error)
        return Step([], priority, None)

    def _fetch(self, listing: Listing, job: Job, cursor: dict[str, Any]) -> Fetched:
        size = self.settings.listing.page_size
        if listing.kind == "prefix":
            page = s3list.list_page(self.client, s3list.parse_pattern(listing.uri), cursor.get("after"), size)
            found = [
                Found(key_id(e.uri), e.uri, etag=e.etag) for e in page.entries if self._may(e.uri, job.tenant)
            ]
            return Fetched(found, None if page.cursor is None else {"after": page.cursor})
        at, line, etag = cursor.get("offset", 0), cursor.get("line", 1), cursor.get("etag")
        mpage = manifests.manifest_page(self.client, listing.uri, at, size, line=line, etag=etag)
        preset = presets.get(job.options.get("task"))
        asks = preset.needs_prompt and job.prompt == preset.prompt  # qa with no question of the job's
        found = [self._line(e, job.tenant, asks) for e in mpage.entries]
        nxt = {"offset": mpage.next_offset, "line": mpage.next_line, "etag": mpage.etag}
        return Fetched(found, None if mpage.next_offset is None else nxt)

    def _may(self, uri: str, tenant: str) -> bool:
        """Each listed object checked as if the tenant had named it: a glob over a whole bucket that is
        granted (the server's own included) must not reach the server's prefixes or another tenant's
        uploads. Such objects are left out, unseen: they are not the tenant's to know of."""
        try:
            self.policy.check(uri, tenant)
        except VlmqError:
            return False
        return True

    def _line(self, e: manifests.ManifestEntry, tenant: str, asks: bool) -> Found:
        """A manifest line as a source, or as a failed one that says what is wrong with it. ``asks``:
        the job's task needs each line's own prompt (qa, grounding with no job prompt)."""
        where = f"manifest line {e.line}"
        cid = e.custom_id if e.custom_id is not None else (key_id(e.uri) if e.uri else f"line-{e.line}")
        try:
            if e.error:
                raise InvalidManifestLine(f"manifest {e.error}")
            check_custom_id(cid)
            if asks and not (e.prompt or "").strip():
                raise InvalidManifestLine(f"{where}: the job's task needs a prompt on every line; none")
            self.policy.check(e.uri, tenant, cid)
            options = ItemOptions.model_validate(e.options or {}).model_dump(exclude_none=True)
        except (InvalidInput, ValueError, ValidationError) as err:
            bad = err if isinstance(err, VlmqError) else InvalidManifestLine(f"{where}: {err}")
            return Found(cid[:CUSTOM_ID_MAX] or f"line-{e.line}", e.uri or "", error=bad)
        return Found(cid, e.uri, prompt=e.prompt, options=options)

    def _store(self, s: Session, job_id: uuid.UUID, seen: int, fetched: Fetched) -> list[uuid.UUID] | None:
        repo.lock_job_finalize(s, job_id)
        job = repo.get_job(s, job_id)
        if job is None or job.status not in JOB_ACTIVE:
            transitions.end_listing(s, job_id, seen, "stopped", "the job stopped")
            return []
        listing = s.get(Listing, job_id)
        assert listing is not None
        skip = (
            done_before(s, job, [f for f in fetched.found if f.error is None])
            if listing.incremental
            else set()
        )
        fresh = [f for f in fetched.found if (f.uri, f.etag) not in skip]
        over = listing.discovered + len(fetched.found) >= self.settings.listing.max_items
        status = "done" if fetched.cursor is None else ("failed" if over else "listing")
        error = f"stopped at {self.settings.listing.max_items} items (listing.max_items)" if over else None
        values = {
            "discovered": Listing.discovered + len(fetched.found),
            "skipped": Listing.skipped + len(skip),
        }
        if not transitions.advance_listing(s, job_id, seen, fetched.cursor or {}, status, error, values):
            return None
        ids = _insert(s, job_id, fresh)
        s.execute(update(Job).where(Job.id == job_id).values(total_items=Job.total_items + len(ids)))
        # Running from its first page: listing is the job's work too, and a source with nothing (new)
        # in it must let the job complete, which a queued job cannot.
        transitions.move_job(s, job_id, JobStatus.RUNNING, {"started_at": sql_now()})
        return [i for i, ok in ids.items() if ok]


def done_before(s: Session, job: Job, found: list[Found]) -> set[tuple[str, str | None]]:
    """(uri, etag) of ``found`` that this tenant has a succeeded source for, made with the job's prompt
    version, options and model: what an incremental listing skips. A manifest line has no ETag: its URI
    is enough."""
    if not found:
        return set()
    earlier = (
        select(Item.uri, Item.etag)
        .join(Job, Job.id == Item.job_id)
        .where(
            Item.parent_id.is_(None),
            Item.uri.in_({f.uri for f in found}),
            Item.status == str(ItemStatus.SUCCEEDED),
            Job.tenant == job.tenant,
            Job.id != job.id,
            Job.prompt_version == job.prompt_version,
            Job.model_id == job.model_id,
            Job.options == job.options,
        )
    )
    done = {(str(u), e) for u, e in s.execute(earlier)}
    uris = {u for u, _ in done}  # a line without an ETag matches its URI alone: a set, not a scan a line
    return {(f.uri, f.etag) for f in found if (f.uri, f.etag) in done or (f.etag is None and f.uri in uris)}


# Built once: a page's rows go to it as parameters (SQLAlchemy's insertmanyvalues), where a statement
# built per page with .values(rows) was compiled each time, 11,000 bind parameters (200 of a 450 ms
# page, bench.listing's profile).
_INSERT = (
    insert(Item)
    .on_conflict_do_nothing(index_elements=["job_id", "custom_id"], index_where=Item.parent_id.is_(None))
    .returning(Item.id, Item.status)
)


def _insert(s: Session, job_id: uuid.UUID, found: list[Found]) -> dict[uuid.UUID, bool]:
    """The page's sources, queued (or failed, for a bad manifest line); a custom_id the job already has
    is not stored again. {id: waiting} of those stored."""
    if not found:
        return {}
    rows = s.execute(_INSERT, [_row(job_id, f) for f in found])
    return {i: st == str(ItemStatus.QUEUED) for i, st in rows}


def _row(job_id: uuid.UUID, f: Found) -> dict[str, Any]:
    # Every row the same keys: a multi-row INSERT takes its columns from the first row.
    failed = {
        "error_code": f.error.code if f.error else None,
        "error_message": str(f.error)[:4000] if f.error else None,
    }
    status = ItemStatus.FAILED if f.error else ItemStatus.QUEUED
    return {
        "id": uuid.uuid4(), "job_id": job_id, "custom_id": f.custom_id, "kind": "source", "uri": f.uri,
        "etag": f.etag, "prompt": f.prompt, "options": f.options, "status": str(status), **failed,
    }  # fmt: skip


def stale(s: Session, older_than: float) -> list[uuid.UUID]:
    """Jobs whose listing has not moved for ``older_than`` seconds while they are active: its message
    was lost (the sweeper sends it again; a duplicate stores nothing, see ``Lister.next_page``)."""
    cutoff = sql_now() - timedelta(seconds=older_than)
    q = (
        select(Listing.job_id)
        .join(Job, Job.id == Listing.job_id)
        .where(
            and_(Listing.status == "listing", Listing.updated_at < cutoff, Job.status.in_(names(JOB_ACTIVE)))
        )
    )
    return list(s.scalars(q))
