"""Settings for every vlmq process, read once from the environment (prefix ``VLMQ_``).

Nested sections use ``__``: ``VLMQ_DB__URL``, ``VLMQ_MODEL__PATH``, ``VLMQ_LIMITS__MAX_PDF_PAGES``.
A ``.env`` file in the working directory and the dev stack's ``.vlmq/dev.env`` (written by
``vlmq dev up``) are read too; real environment variables win over both.

A server URL left unset means "none configured": ``vlmq dev up`` / ``vlmq demo`` then start embedded
servers (PostgreSQL and Redis from pip wheels, moto's S3 server) and write their URLs to dev.env.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from croniter import croniter
from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

STATE_DIR = Path(".vlmq")
DEV_ENV_FILE = STATE_DIR / "dev.env"
# The tiny random-weight development model (`vlmq dev tiny-model`, `make demo`) carries this file.
DEV_MODEL_MARKER = "vlmq-tiny.json"
# Its output tokens a page when the user sets none: enough for the demo's taught answers (at most 40
# tokens); the full 1,024 of junk took 40 s a page on 2 cores, for answers that mean nothing.
DEV_MAX_NEW_TOKENS = 64


class DbSettings(BaseModel):
    url: str | None = None  # postgresql+psycopg://user@host:5432/db
    pool_size: int = 5  # connections each process keeps
    echo: bool = False  # log every SQL statement


class RedisSettings(BaseModel):
    url: str | None = None  # redis://127.0.0.1:6379/0
    # Prefix on every key Celery writes, so several deployments (or test runs) can share one Redis.
    key_prefix: str = ""


class S3Settings(BaseModel):
    endpoint_url: str | None = None  # None: AWS itself (or the dev stack's moto server)
    bucket: str = "vlmq"  # the server's own bucket: uploads, media, results, outputs
    region: str = "us-east-1"
    access_key_id: str | None = None  # none: boto3's own credential chain (role, profile)
    secret_access_key: SecretStr | None = None
    create_bucket: bool = True  # create the bucket at start when missing (dev, MinIO)
    # S3 writes at once: a batch's result payloads (threads; the connection pool is sized to match) and
    # an upload's files in the API. When a job's last pages finish together, its results wait on S3
    # round trips, not CPU; so does a many-file upload before its job exists.
    put_concurrency: int = Field(default=8, ge=1, le=64)


class OpenAISettings(BaseModel):
    """The "openai" engine (docs/engines.md): any server speaking OpenAI's chat completions API (``vllm
    serve``, SGLang, a hosted API) runs the model; the worker only sends requests."""

    # The servers' API roots, each ending in /v1; several are balanced by their requests in flight.
    # JSON list or comma separated: VLMQ_MODEL__OPENAI__BASE_URLS=http://gpu-a:8000/v1,http://gpu-b:8000/v1
    base_urls: Annotated[list[str], NoDecode] = Field(default_factory=list)
    api_key: SecretStr | None = None  # sent as "Authorization: Bearer"; never logged
    # The server's model name (vllm serve's --served-model-name); unset: model.model_id, else the path's.
    served_model: str | None = None
    # What the server is, for the extras it takes: "vllm" and "sglang" keep special tokens (the box
    # markers) and cap thinking by continuing the assistant message; "generic" (a hosted API) sends plain
    # OpenAI fields only, and the thinking budget is not applied (docs/engines.md).
    server: Literal["vllm", "sglang", "generic"] = "vllm"
    # Pages travel in the request as data URLs, or ("presigned") as presigned S3 GET URLs that the
    # server fetches itself: only for a server that may read this deployment's bucket.
    media: Literal["data_url", "presigned"] = "data_url"
    presign_seconds: int = Field(default=3600, ge=60)  # how long a presigned page URL stays valid
    # Requests this worker has in flight at once, over every server (keep-alive connections as many).
    max_in_flight: int = Field(default=64, ge=1)
    connect_timeout_s: float = Field(default=10.0, gt=0)  # to open a connection to a server
    # A request's answer may take minutes (thousands of reasoning tokens); longer counts as a failure.
    read_timeout_s: float = Field(default=600.0, gt=0)
    # 429, 5xx, timeouts and dropped connections are tried again (another server when there are
    # several) this many times, after a random wait below backoff_base_s * 2^try (at most
    # backoff_max_s, or the server's Retry-After); then the batch goes back to wait (transport_error).
    max_retries: int = Field(default=6, ge=0)
    backoff_base_s: float = Field(default=0.5, gt=0)  # the first retry's wait is below this
    backoff_max_s: float = Field(default=30.0, gt=0)  # no retry waits longer
    # More fields for every request's body (JSON), e.g. {"top_p": 0.9}; they win over vlmq's own.
    extra_body: dict[str, Any] = Field(default_factory=dict)

    @field_validator("base_urls", mode="before")
    @classmethod
    def _urls(cls, v: object) -> object:
        if isinstance(v, str):  # the environment's form: a JSON list, or URLs joined by commas
            v = json.loads(v) if v.lstrip().startswith("[") else [u for u in v.split(",") if u.strip()]
        if isinstance(v, list):
            return [str(u).strip().rstrip("/") for u in v]
        return v


class ModelSettings(BaseModel):
    # "fake": a fixed-latency test/benchmark engine with canned output (workers/inference/fake_engine.py);
    # "openai": an OpenAI-compatible server runs the model (model.openai; docs/engines.md).
    engine: Literal["transformers", "vllm", "fake", "openai"] = "transformers"
    path: str = str(STATE_DIR / "models" / "tiny-glm4v")  # real users: GLM-4.1V-9B-Thinking(-AWQ)
    model_id: str | None = None  # name stored on results; defaults to the path's last part
    # The checkpoint's revision (a commit or tag), stored on results; bump it when the weights change
    # under the same model_id so `vlmq reprocess` finds the results made by the old weights.
    revision: str | None = None
    max_new_tokens: int = 1024  # output tokens a page (reasoning and answer); the development model: 64
    # Reasoning longer than this is closed with </think><answer> and the model resumes for the answer.
    thinking_budget: int | None = 8192
    temperature: float = 0.0  # 0 = greedy
    device: str = "cpu"  # transformers engine only
    # "auto": float32 for the transformers engine on CPU, the checkpoint's own dtype for vLLM.
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    # vLLM engine
    quantization: str | None = None  # "awq" for the AWQ checkpoint; None lets vLLM read the config
    tensor_parallel_size: int = 1  # 1, 2 or 4 (_tensor_parallel_size)
    max_model_len: int = 16384  # vLLM: prompt plus output tokens a request may hold
    gpu_memory_utilization: float = 0.85  # vLLM: share of the GPU the engine may take
    compile_cache_dir: str | None = None  # vLLM, Triton, inductor and FlashInfer caches here (a volume)
    # vLLM: requests decoded at once (256 measured fastest on the H200: BENCHMARKS.md)
    max_num_seqs: int = 256
    # vLLM's scheduler: "priority" serves each request by its claim's turn (jobs.scheduling: a small
    # job's pages pass a bulk job's already inside the engine); "fcfs" in arrival order.
    scheduling_policy: Literal["priority", "fcfs"] = "priority"
    # vLLM worker (workers.inference.gate): claims made beyond the places the engine has free. A task
    # claims its pages only when they will soon get a place, so a small job's pages are not claimed
    # behind a thousand bulk pages that task threads hold. Larger: more pages fetched ahead.
    claim_ahead: int = Field(default=16, ge=0)
    # vLLM worker with "priority" scheduling: urgent work (a turn within the first max_num_seqs) that
    # finds every slot running work at least max_num_seqs places behind it in the turn takes the slot of
    # the running request with the least output so far; that request starts again later (its prompt is
    # in the prefix cache). vLLM 0.26 preempts for priority only when KV blocks run short.
    urgent_preemption: bool = True
    # Prompt tokens (prefill chunks plus decode steps) one engine step may take. None: vLLM's default for
    # offline batch work on this GPU, what LLM.generate gets (16,384 on 70 GB+ GPUs other than A100, else
    # 8,192); without it vLLM's engine API falls back to 2,048, about one 1288-px page per step.
    max_num_batched_tokens: int | None = Field(default=None, ge=256)
    images_per_prompt: int = 1  # vLLM: images one prompt may hold (granularity "document" needs more)
    # Threads preprocessing images for the vLLM engine at once (0 or 1: on the engine's event loop).
    renderer_workers: int = 8
    # Inference tasks a GPU worker runs at once (threads sharing one engine); Settings.gpu_tasks. 0, the
    # default: enough for the engine's backlog even when tasks are half full. Ignored by the transformers
    # engine (one at a time).
    batches_in_flight: int = Field(default=0, ge=0)
    # Requests the vLLM engine holds at once, running or waiting inside it (preprocessed: a 1288-px page
    # holds 15-30 MB of pixel patches in host memory); the task threads' other requests wait, media
    # fetched, for a place. 0, the default: twice max_num_seqs (Settings.engine_backlog).
    max_requests_in_engine: int = Field(default=0, ge=0)
    # Processes beside a GPU worker that store its results (workers.writers), away from the engine's
    # front end and its GIL. None, the default: 4 for the vLLM engine, 0 (the task itself) otherwise.
    result_writers: int | None = Field(default=None, ge=0)
    # Written (JSON: engine, model, load seconds, start phases) once the engine is up, before any task.
    ready_file: str | None = None
    # vLLM engine: > 0 logs vLLM's throughput line (prompt and generation tokens/s, requests running and
    # waiting) every this many seconds, and one "engine timing" line per request (when it was queued,
    # scheduled, and gave its first and last token). 0, the default: no engine statistics are kept.
    log_stats_seconds: float = Field(default=0.0, ge=0)
    ignore_eos: bool = False  # benchmarks only: every request produces exactly max_new_tokens
    # Bad output (answer missing, malformed tags) is generated again at each of these temperatures in
    # turn until one is well-formed; the result then carries the flag "temperature_fallback:<t>".
    retry_temperatures: list[float] = Field(default_factory=lambda: [0.6, 1.0])
    fake_latency_seconds: float = 0.05  # the "fake" engine: seconds per batch
    # The "fake" engine's outputs: mean tokens a page (0: a short canned text), and seconds per token of
    # a batch's longest output on top of fake_latency_seconds (workers/inference/fake_engine.py).
    fake_output_tokens: int = Field(default=0, ge=0)
    fake_token_seconds: float = Field(default=0.0, ge=0)
    openai: OpenAISettings = Field(default_factory=OpenAISettings)  # the "openai" engine's servers

    @property
    def development(self) -> bool:
        """Serving the tiny development model (its folder carries DEV_MODEL_MARKER)."""
        return self.engine not in ("fake", "openai") and (Path(self.path) / DEV_MODEL_MARKER).is_file()

    def development_notice(self) -> str | None:
        """What a worker says once at start when it serves the development model; None otherwise."""
        if not self.development:
            return None
        ladder = f"retry ladder {self.retry_temperatures}" if self.retry_temperatures else "no retry ladder"
        return (
            f"development model ({self.path}): random weights, answers are not meaningful; "
            f"max_new_tokens {self.max_new_tokens}, {ladder}; point VLMQ_MODEL__PATH at real weights"
        )

    @model_validator(mode="after")
    def _development_defaults(self) -> ModelSettings:
        # A first job on the development model should take seconds: few tokens, and no retry ladder,
        # since its answers are as bad at every temperature. What the user set (environment, .env,
        # arguments: pydantic's fields_set) is kept.
        if self.development:
            if "max_new_tokens" not in self.model_fields_set:
                self.max_new_tokens = DEV_MAX_NEW_TOKENS
            if "retry_temperatures" not in self.model_fields_set:
                self.retry_temperatures = []
        return self

    @field_validator("tensor_parallel_size")
    @classmethod
    def _tensor_parallel_size(cls, v: int) -> int:
        # An int checked here, not Literal[1, 2, 4]: pydantic does not turn the environment's string "2"
        # into a literal int, so VLMQ_MODEL__TENSOR_PARALLEL_SIZE=2 was refused.
        if v not in (1, 2, 4):
            raise ValueError(f"tensor_parallel_size must be 1, 2 or 4 GPUs per engine, not {v}")
        return v


class LimitSettings(BaseModel):
    max_upload_bytes: int = 200 * 1024 * 1024  # one uploaded file (413 above)
    max_source_bytes: int = 500 * 1024 * 1024  # one source read from S3 or https (source_too_large above)
    max_pdf_pages: int = 500  # pages of one PDF (too_many_pages above, before rendering)
    max_items_per_job: int = 50_000  # items (files) of one job
    render_longest_side: int = 1288  # a rendered page's longest side in pixels
    batch_size: int = 8  # pages per inference task
    # Pages of a source's first inference task: its first page goes to the GPU as soon as it is rendered
    # (not after batch_size pages), so the engine starts a job's work one page's rendering after prep
    # takes the file. Later tasks take batch_size pages. Capped at batch_size.
    first_chunk_pages: int = Field(default=1, ge=1)
    max_attempts: int = 3  # tries of an item before it fails with its last error
    # Transport failures (S3, the database unreachable) back off and retry up to this many attempts, so
    # an outage of a few minutes fails nothing; other failures stop at max_attempts.
    max_transport_attempts: int = 12
    max_request_bytes: int = 1024 * 1024 * 1024  # a whole upload request, checked while it streams in
    # Per tenant, over its unfinished jobs: more is refused with 429 until some finish.
    max_active_jobs_per_tenant: int = 100
    max_active_items_per_tenant: int = 200_000  # ... and over the items of those jobs
    # Videos. Sampling is GLM-4.1V's own (its video processor's defaults): ``video_fps`` frames a second
    # up to ``video_sample_seconds``, spread evenly over longer videos, at most ``video_max_frames``
    # (even: the model takes frames in pairs). Longer than ``max_video_seconds`` is refused.
    video_fps: float = Field(default=2.0, gt=0, le=30)
    video_sample_seconds: float = Field(default=300.0, gt=0)
    video_max_frames: int = Field(default=600, ge=2, le=2000, multiple_of=2)
    max_video_seconds: float = Field(default=3600.0, gt=0)
    max_video_bytes: int = Field(default=200 * 1024 * 1024, gt=0)
    # Vision tokens one video may take in the prompt: frames are stored at the size that fits, so the
    # processor never resizes them. GLM's processor allows 30,000; keep this plus the thinking budget
    # and max_new_tokens under model.max_model_len (16,384 by default).
    video_max_tokens: int = Field(default=6144, ge=64, le=30000)
    video_longest_side: int = Field(default=1288, ge=28, le=4096)  # per frame, whatever the budget


class ListingSettings(BaseModel):
    """Jobs submitted as a source (an S3 prefix with a glob, or a manifest): listed a page at a time by
    the prep workers, paced so that a corpus of millions never floods Postgres or the queues."""

    page_size: int = Field(default=1000, ge=1, le=1000)  # objects or manifest lines per page (S3: <=1000)
    max_items: int = Field(default=1_000_000, ge=1)  # a listing stops here (its job says so)
    # Listing pauses while the job has this many items waiting or in flight, and goes on as they finish:
    # the job's open items stay bounded however large the source. 0: no pause.
    max_open_items: int = Field(default=20_000, ge=0)
    pause_seconds: float = Field(default=10.0, gt=0)  # how long a paused listing waits before looking again


class QueueSettings(BaseModel):
    """Delivery and recovery (see RELIABILITY.md). Postgres leases make a lost worker's items move
    again after ``lease_seconds``; the sweeper (Celery beat) re-enqueues what should be moving."""

    lease_seconds: float = 120.0  # an in-flight item's lease; renewed every heartbeat_seconds
    heartbeat_seconds: float = 20.0  # how often a worker renews its items' leases
    # A job whose sources (or units) wait with none in flight, the next of them waiting this long, gets
    # word of them again, once in this period (its messages may be lost: jobs.wakes). A duplicate
    # message is harmless (compare-and-set claims), so this only bounds how late.
    requeue_after_seconds: float = 1800.0
    sweep_interval_seconds: float = 30.0  # how often beat runs the sweeper
    sweep_batch: int = 10_000  # waiting items a sweep sends word of, at most (the rest: the next sweeps)
    # A job with more sources is enqueued as fan-out messages of this many (a prep worker expands them).
    fan_out_size: int = 500
    # A retried task waits a random time below 1, 2, 4, ... seconds (full jitter), below this at most.
    retry_backoff_max_seconds: int = 60
    # Redis redelivers an unacknowledged message after this; longer than the longest task.
    visibility_timeout_seconds: int = 4 * 3600
    task_time_limit_seconds: int = 3600  # hard limit (prefork prep workers); soft limit 60 s before
    job_expiry_seconds: float = 24 * 3600.0  # unfinished items of an older job fail with code "expired"
    # A job's history (GET /v1/jobs/{id}/events) is kept this long, then the sweeper deletes it; 0: kept.
    event_retention_days: float = Field(default=30.0, ge=0)
    # A worker told to stop (SIGTERM) lets its running batches finish this long, then hands their units
    # back at once and exits (workers.drain). Keep it under the platform's notice (Kubernetes:
    # terminationGracePeriodSeconds, 30 s by default; spot instances: 30 s to 2 min).
    drain_grace_seconds: float = Field(default=25.0, ge=0)


class InputSettings(BaseModel):
    """Which input URIs a job may name (the rule is jobs.adapters.uris.UriPolicy; SECURITY.md says why).

    s3://: a tenant may name its own uploads (``s3://BUCKET/uploads/TENANT/...``) and what ``grants``
    gives it; the server's own prefixes (uploads of others, files, media, results, job outputs) are
    never reachable by naming them. https:// only when listed in ``allowed_schemes``, and then never to a
    loopback, link-local or private address (every address the host resolves to, redirects included)
    unless ``allow_private_addresses`` is set. ``write_grants``: the prefixes a job's dataset may also be
    written to (a destination of the tenant's own), never the server's own prefixes."""

    # add "https" to fetch sources over HTTPS; file:// never
    allowed_schemes: list[str] = Field(default_factory=lambda: ["s3"])
    # Tenant (or "*" for every tenant) -> the s3:// buckets or prefixes it may name, e.g.
    # VLMQ_INPUTS__GRANTS='{"acme": ["s3://acme-corpus/"], "*": ["s3://vlmq/shared/"]}'.
    grants: dict[str, list[str]] = Field(default_factory=dict)
    # Tenant (or "*") -> the s3:// prefixes the server may write a job's dataset to for it ("dataset":
    # {"prefix": ...}), e.g. VLMQ_INPUTS__WRITE_GRANTS='{"acme": ["s3://acme-out/"]}'. Apart from
    # ``grants``: reading a bucket never lets a job write to it. A "*" grant does not reach a prefix
    # granted by name to another tenant.
    write_grants: dict[str, list[str]] = Field(default_factory=dict)
    allow_private_addresses: bool = False  # https to loopback, link-local, private addresses
    https_timeout_seconds: float = 30.0
    max_redirects: int = 5

    @field_validator("grants", "write_grants")
    @classmethod
    def _grant_form(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for tenant, prefixes in v.items():
            for p in prefixes:
                if not p.startswith("s3://") or not p[5:].partition("/")[0]:
                    raise ValueError(
                        f"grant {p!r} for {tenant!r}: expected s3://bucket/ or s3://bucket/prefix"
                    )
                if any(seg in (".", "..") for seg in p[5:].split("/")):
                    raise ValueError(f"grant {p!r} for {tenant!r}: '.' and '..' segments are not allowed")
        return v


class MediaSettings(BaseModel):
    """Input handling beyond the page limits in LimitSettings (documents; see README "Inputs and options")."""

    # Decompression-bomb guard: images with more pixels are refused from their header, before decoding.
    max_image_pixels: int = 100_000_000  # 10k x 10k; an A4 scan at 600 dpi is 35 M
    # Longest side of a page rendered by DPI: a huge page at a high DPI is scaled down to this (flagged).
    max_render_side: int = 4096
    # granularity "document": the first N pages go in one prompt. A vLLM worker needs
    # VLMQ_MODEL__IMAGES_PER_PROMPT at least this large.
    document_pages: int = 8
    # text_hint: at most this many characters of a page's text layer are added to the prompt.
    text_hint_max_chars: int = 6000
    soffice: str = "soffice"  # LibreOffice, for PPT/PPTX/DOC/DOCX/ODP/ODT; absent: converter_missing
    office_timeout_s: float = 120.0  # one LibreOffice conversion
    # Videos are decoded in a child process (workers.media.isolated): a decoder crash or hang fails
    # that item, not the prep process. 0: no time limit. (Decoding runs at about 90 frames/s a core:
    # an hour of 30 fps video, the longest allowed by default, takes about 20 minutes.)
    isolate_video_decoder: bool = True
    video_decode_timeout_s: float = Field(default=3600.0, ge=0)
    # Pages whose uploads (image and text layer) may still be going on while prep renders the next one:
    # rendering does not wait for S3 round trips. 0: each page is stored before the next is rendered.
    upload_pages_ahead: int = Field(default=4, ge=0, le=64)


class ReprocessSettings(BaseModel):
    """The scheduled reprocessing run (see jobs.reprocessing.reprocessor)."""

    # Cron expression, UTC, for Celery beat's reprocess entry; "" turns the entry off.
    schedule: str = "0 2 * * *"
    failed: bool = True  # the scheduled run retries failed items
    outdated: bool = True  # ... and recomputes results made by another model, revision or prompt
    max_items: int = Field(default=10_000, ge=1)  # per run; the rest waits for the next run
    # A refresh still pending or running this long after its last move is given back and re-sent by
    # the next scheduled run (its message or its worker was lost).
    lease_s: int = Field(default=6 * 3600, ge=60)
    # A slot with no run this long after its time (beat's message lost: a retry held by a worker killed
    # meanwhile waits for Redis' visibility timeout) is sent again by the sweeper; 0: never caught up.
    catch_up_s: int = Field(default=6 * 3600, ge=0)

    @field_validator("schedule")
    @classmethod
    def _cron(cls, v: str) -> str:
        if v and (len(v.split()) != 5 or not croniter.is_valid(v)):
            raise ValueError(f"not a 5-field cron expression: {v!r}")
        return v


class FairnessSettings(BaseModel):
    """Who is served next (jobs.scheduling.fairness): normal before low; inside a class, the tenant with
    the least work in flight for its weight, then that tenant's job with the least in flight."""

    # Tenant -> weight (default 1): a tenant of weight 3 keeps three times the work in flight of one of
    # weight 1 while both have work waiting. VLMQ_FAIRNESS__TENANT_WEIGHTS='{"acme": 3}'
    tenant_weights: dict[str, float] = Field(default_factory=dict)
    # Units (pages) one tenant may have in inference at once, over the whole fleet; 0: no cap.
    max_units_in_flight_per_tenant: int = Field(default=0, ge=0)
    # Sources one tenant may have in prep at once; 0: no cap.
    max_sources_preparing_per_tenant: int = Field(default=0, ge=0)
    # A task that found only capped tenants' work waiting looks again after this many seconds.
    recheck_seconds: float = Field(default=2.0, gt=0)

    @field_validator("tenant_weights")
    @classmethod
    def _positive(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {t: w for t, w in v.items() if w <= 0}
        if bad:
            raise ValueError(f"tenant weights must be positive: {bad}")
        return v

    def weight(self, tenant: str) -> float:
        return self.tenant_weights.get(tenant, 1.0)


class ClockSettings(BaseModel):
    # A soak moves the whole stack's clock forward (jobs.clock.advance); never set in production.
    simulated: bool = False


class ApiSettings(BaseModel):
    host: str = "127.0.0.1"  # the API's bind address (0.0.0.0 in a container)
    port: int = 8000
    # "key:tenant" pairs, comma separated; empty means a development key is made and printed.
    keys: SecretStr | None = None
    base_url: str | None = None  # what the CLI talks to; default http://host:port
    # The bearer token a scraper sends for the API's /metrics (counts over every tenant). Unset: /metrics
    # is refused; a tenant's API key never opens it.
    metrics_token: SecretStr | None = None


class MetricsSettings(BaseModel):
    # Prometheus exporter of a `vlmq worker` (every process of it, aggregated); None: no exporter.
    worker_port: int | None = None
    worker_host: str = "127.0.0.1"  # 0.0.0.0 in a container, for Prometheus to reach it
    # Where a worker's processes write their samples (prometheus_client multiprocess mode); default: a
    # fresh temporary directory per worker.
    multiproc_dir: str | None = None
    busy_window_s: float = 60.0  # the engine busy fraction is measured over this many seconds


class ProbeSettings(BaseModel):
    """What ``vlmq probe`` (Kubernetes exec probes, deploy/k8s) reads; docs/deploy.md."""

    # Touched by a running worker (its consumer loop, and each lease renewal while a task holds the
    # loop) and by beat at each message it sends; ``vlmq probe worker|beat --live`` reads its age.
    # None: nothing is written and the live probe fails, saying so.
    live_file: str | None = None
    live_interval_seconds: float = Field(default=10.0, gt=0)  # how often the consumer loop touches it
    # Older than this: the process is stuck. Beat's limit is at least three sweep intervals, since beat
    # touches the file only when it sends the sweep.
    live_max_age_seconds: float = Field(default=90.0, gt=0)
    timeout_seconds: float = Field(default=3.0, gt=0)  # the readiness probe's wait for Postgres and Redis


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="VLMQ_",
        env_nested_delimiter="__",
        env_file=(".env", str(DEV_ENV_FILE)),
        extra="ignore",
    )

    state_dir: Path = STATE_DIR  # where the dev key, dev.env, embedded servers and beat's schedule live
    db: DbSettings = Field(default_factory=DbSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    s3: S3Settings = Field(default_factory=S3Settings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    inputs: InputSettings = Field(default_factory=InputSettings)
    media: MediaSettings = Field(default_factory=MediaSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    clock: ClockSettings = Field(default_factory=ClockSettings)
    fairness: FairnessSettings = Field(default_factory=FairnessSettings)
    reprocess: ReprocessSettings = Field(default_factory=ReprocessSettings)
    listing: ListingSettings = Field(default_factory=ListingSettings)
    probe: ProbeSettings = Field(default_factory=ProbeSettings)

    @property
    def model_id(self) -> str:
        return self.model.model_id or Path(self.model.path.rstrip("/")).name

    @property
    def engine_backlog(self) -> int:
        """Requests the vLLM engine holds at once: ``model.max_requests_in_engine``, or (0) twice
        ``max_num_seqs``, 512 against 256 slots.

        With only as many requests as slots, a wave of requests that finish together leaves slots empty
        until their task threads have stored the results and claimed, fetched and preprocessed the next
        batches (seen on the H100 as a refill gap half-way through a 512-page run). With twice as many,
        the next wave already waits inside the engine, preprocessed. The cost is host memory: a waiting
        1288-px page holds its pixel patches, 15-30 MB, in the engine process."""
        m = self.model
        return m.max_requests_in_engine or 2 * m.max_num_seqs

    @property
    def result_writers(self) -> int:
        """Result writer processes a GPU worker starts (``model.result_writers``; see workers.writers)."""
        m = self.model
        return m.result_writers if m.result_writers is not None else (4 if m.engine == "vllm" else 0)

    @property
    def gpu_tasks(self) -> int:
        """Inference tasks (Celery threads) a vLLM worker runs at once: ``model.batches_in_flight``, or
        (0) enough to fill ``engine_backlog`` with tasks half full: 128 against 512 requests.

        Tasks are often smaller than ``batch_size``: a source's first page goes alone
        (``first_chunk_pages``), its last pages are what is left, and a job of single images makes
        one-page tasks. Counted in full tasks, 8-page PDFs would keep only half the backlog. The engine
        bounds what it holds itself (VllmEngine's backlog), so full tasks cost no more engine memory,
        only the images fetched ahead by the tasks that wait for a place."""
        m = self.model
        return m.batches_in_flight or max(1, -(-2 * self.engine_backlog // self.limits.batch_size))

    @property
    def api_base_url(self) -> str:
        return self.api.base_url or f"http://{self.api.host}:{self.api.port}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, built once. Tests call ``get_settings.cache_clear()`` after changing env."""
    return Settings()
