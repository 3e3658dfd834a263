"""A whole vlmq system of its own for one chaos test: its own embedded Redis (so FLUSHALL touches nothing
else), its own database on the chaos session's own embedded PostgreSQL (so restarting it touches nothing
else), moto's S3 behind a switchable proxy, and the API, a prep worker, an inference worker (the fake
fixed-latency engine) and beat as separate processes, started as a user starts them."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import httpx
import redis
from PIL import Image

from api.cli.devstack import ManagedProcess, free_port, start_redis, wait_until
from api.cli.pgserver import EmbeddedPostgres, start_postgres
from api.cli.processes import answers, wait_for_log
from jobs.adapters.dispatch import EPOCH_KEY
from migrations import upgrade
from tests.chaos.proxy import Proxy

VLMQ = [sys.executable, "-m", "api.cli"]
KEY = "chaos-api-key-5f1d2c"
OTHER_KEY = "chaos-other-key-93ab"
AUTH = {"Authorization": f"Bearer {KEY}"}
# Secrets that must never reach a log; the database accepts any password (trust), so it can carry one.
DB_PASSWORD = "chaos-db-pw-7c41e9"
S3_SECRET = "chaos-s3-secret-2b8d"
SECRETS = (KEY, OTHER_KEY, DB_PASSWORD, S3_SECRET)

FAST = {  # recovery on a test's time scale; RELIABILITY.md gives the production defaults
    "VLMQ_MODEL__ENGINE": "fake",
    "VLMQ_MODEL__MODEL_ID": "fake-engine",
    "VLMQ_MODEL__FAKE_LATENCY_SECONDS": "0.05",
    # The GPU worker stores results in writer processes, as a vLLM worker does by default: the kill,
    # restart and outage tests go through them.
    "VLMQ_MODEL__RESULT_WRITERS": "2",
    "VLMQ_LIMITS__BATCH_SIZE": "8",
    "VLMQ_LIMITS__RENDER_LONGEST_SIDE": "64",
    "VLMQ_QUEUE__LEASE_SECONDS": "5",
    "VLMQ_QUEUE__HEARTBEAT_SECONDS": "1",
    "VLMQ_QUEUE__REQUEUE_AFTER_SECONDS": "60",
    "VLMQ_QUEUE__SWEEP_INTERVAL_SECONDS": "2",
    "VLMQ_QUEUE__RETRY_BACKOFF_MAX_SECONDS": "4",
    # A chaos test's system may start in the hours after 02:00: no nightly run caught up under its jobs.
    "VLMQ_REPROCESS__CATCH_UP_S": "0",
}


class PgServer:
    """The chaos session's PostgreSQL: restartable on the same port and data directory."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir, self.port = state_dir, free_port()
        self.server: EmbeddedPostgres = start_postgres(state_dir, self.port)[0]

    def database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.server.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = f"postgresql+psycopg://postgres:{DB_PASSWORD}@127.0.0.1:{self.port}/{name}"
        upgrade(url)
        return url

    def stop(self) -> None:
        self.server.stop()

    def start(self) -> None:
        self.server = start_postgres(self.state_dir, self.port)[0]


class Stack:
    def __init__(
        self, root: Path, pg: PgServer, moto_port: int, extra_env: dict[str, str] | None = None
    ) -> None:
        self.root, self.pg = root, pg
        self.redis_proc, self.redis_url = start_redis(root / "redis")
        self.s3 = Proxy(moto_port)
        self.bucket = f"chaos-{uuid.uuid4().hex[:8]}"
        self.db_url = pg.database(f"chaos_{uuid.uuid4().hex[:10]}")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "VLMQ_DB__URL": self.db_url,
            "VLMQ_REDIS__URL": self.redis_url,
            "VLMQ_S3__ENDPOINT_URL": self.s3.url,
            "VLMQ_S3__BUCKET": self.bucket,
            "VLMQ_S3__ACCESS_KEY_ID": "chaos",
            "VLMQ_S3__SECRET_ACCESS_KEY": S3_SECRET,
            "VLMQ_STATE_DIR": str(root / "state"),
            "VLMQ_API__KEYS": f"{KEY}:tenant-a,{OTHER_KEY}:tenant-b",
            "VLMQ_INPUTS__GRANTS": json.dumps({"*": [f"s3://{self.bucket}/"]}),
            "VLMQ_API__PORT": str(self.port),
            "PYTHONUNBUFFERED": "1",
            **FAST,
            **(extra_env or {}),
        }
        self.procs: dict[str, ManagedProcess] = {}
        self._s3 = boto3.client(
            "s3", endpoint_url=f"http://127.0.0.1:{moto_port}", region_name="us-east-1",
            aws_access_key_id="chaos", aws_secret_access_key=S3_SECRET,
        )  # fmt: skip
        self._s3.create_bucket(Bucket=self.bucket)
        self._generation = 0

    # -- processes ---------------------------------------------------------------------------------

    def start(
        self, name: str, *args: str, prefix: list[str] | None = None, env: dict[str, str] | None = None
    ) -> ManagedProcess:
        """``vlmq ARGS``; ``prefix``: run it through that (``ip netns exec NS``), ``env``: instead of
        the stack's own (tests.chaos.hosts: another host's view of the services)."""
        if name in self.procs:
            self.procs[name].stop()  # reaps a killed one and closes its log
        self._generation += 1
        log = self.root / "logs" / f"{name}-{self._generation}.log"
        argv = [*(prefix or []), *VLMQ, *args, "--log-level", "info"]
        proc = ManagedProcess(name, argv, log, env=env or self.env)
        self.procs[name] = proc
        return proc

    def start_all(self, prep_workers: int = 1) -> None:
        """The API, ``prep_workers`` prep workers (one holding 2 processes; several: one process each,
        so that killing one leaves the others rendering), the GPU worker and beat."""
        self.start("api", "api", "--port", str(self.port))
        for n in range(prep_workers):
            self.start_prep(n, 2 if prep_workers == 1 else 1)
        self.start_gpu_worker()
        self.start("beat", "beat")
        wait_until(self._healthy, "the chaos stack's API", 120)
        # The first sweep on a fresh Redis finds no marker and treats it as a reset: let it pass before
        # a test submits, or it would re-enqueue that test's whole job once.
        wait_until(self._swept, "the first sweep", 120)

    def start_prep(self, n: int = 0, concurrency: int = 1) -> ManagedProcess:
        """Prep worker ``n``: "worker-prep" (the first), "worker-prep-2", ...; each its own Celery name."""
        name = self.prep_name(n)
        return self.start(name, "worker", "--queues", "prep", "--concurrency", str(concurrency),
                          "--name", name)  # fmt: skip

    @staticmethod
    def prep_name(n: int) -> str:
        return "worker-prep" if n == 0 else f"worker-prep-{n + 1}"

    def _swept(self) -> bool:
        client = self.redis()
        try:
            return bool(client.exists(EPOCH_KEY))
        finally:
            client.close()

    def start_gpu_worker(self) -> ManagedProcess:
        proc = self.start("worker-gpu", "worker", "--queues", "gpu")
        wait_for_log(proc, "vlmq worker: engine", 120)
        wait_for_log(proc, "result writer processes", 60)  # FAST's VLMQ_MODEL__RESULT_WRITERS
        return proc

    def _healthy(self) -> bool:
        return answers(f"{self.base}/healthz", list(self.procs.values()))

    def kill9(self, name: str) -> int:
        """SIGKILL the process itself (not its group): a worker dying mid-batch, no cleanup at all."""
        pid = self.procs[name].pid
        os.kill(pid, signal.SIGKILL)
        self.procs[name].proc.wait(10)
        return pid

    def kill9_group(self, name: str) -> int:
        """SIGKILL the process and everything in its group (a prep worker's pool, a GPU worker's result
        writers): a machine or container lost at once."""
        pid = self.procs[name].pid
        with contextlib.suppress(ProcessLookupError):  # it had died already
            os.killpg(pid, signal.SIGKILL)
        self.procs[name].proc.wait(10)
        return pid

    def stop(self) -> None:
        for p in reversed(list(self.procs.values())):
            p.stop()
        self.s3.down()
        self.redis_proc.stop()
        self._s3.close()

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted((self.root / "logs").glob("*.log")))

    # -- data ----------------------------------------------------------------------------------------

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)

    def put_images(self, n: int, prefix: str = "in") -> list[str]:
        """n distinct tiny PNGs in the bucket; their s3:// URIs."""
        uris = []
        for i in range(n):
            buf = io.BytesIO()
            Image.new("RGB", (16, 12), (i % 256, (i // 256) % 256, 7)).save(buf, "PNG")
            key = f"{prefix}/{i:05d}.png"
            self._s3.put_object(Bucket=self.bucket, Key=key, Body=buf.getvalue())
            uris.append(f"s3://{self.bucket}/{key}")
        return uris

    def put(self, key: str, data: bytes) -> str:
        self._s3.put_object(Bucket=self.bucket, Key=key, Body=data)
        return f"s3://{self.bucket}/{key}"

    def keys(self, prefix: str) -> list[str]:
        """The bucket's keys under ``prefix`` (read from moto itself, whatever the proxy's state)."""
        listing = self._s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return sorted(o["Key"] for o in listing.get("Contents", []))

    def read(self, key: str) -> bytes:
        return bytes(self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def submit(self, uris: list[str], **extra: Any) -> dict[str, Any]:
        items = [{"custom_id": f"item-{i:05d}", "uri": u} for i, u in enumerate(uris)]
        r = httpx.post(f"{self.base}/v1/jobs", json={"items": items, **extra}, headers=AUTH, timeout=120)
        assert r.status_code == 202, r.text
        return dict(r.json())

    def wait_terminal(self, job_id: str, timeout: float = 240) -> tuple[dict[str, Any], float]:
        """The job once terminal, and when (monotonic); API errors while a server restarts are retried."""
        deadline = time.monotonic() + timeout
        job: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                job = httpx.get(f"{self.base}/v1/jobs/{job_id}", headers=AUTH, timeout=10).json()
            except (httpx.HTTPError, ValueError):
                job = {}
            if job.get("status") in ("completed", "failed", "cancelled", "expired"):
                return job, time.monotonic()
            time.sleep(0.5)
        raise AssertionError(f"job {job_id} not terminal after {timeout} s: {job}\n{self.diagnose()}")

    def diagnose(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log_tail(2500)}" for p in self.procs.values())
