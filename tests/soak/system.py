"""The soak's whole system: its own PostgreSQL (restartable), moto's S3 behind the switchable proxy, and
tests.chaos.stack.Stack's Redis and vlmq processes (the API, several prep workers, the GPU worker with
the fake engine, beat), every one started as an operator starts it."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from api.cli.devstack import ManagedProcess, start_moto, wait_until
from api.cli.processes import wait_for_log
from tests.chaos.stack import PgServer, Stack
from tests.soak.config import SoakConfig, stack_env

METRICS_TOKEN = "soak-metrics-token-4e1a"
# One key per user: the three kinds of client are three tenants.
TENANTS = {"bulk": "soak-bulk-key-7d20", "rest": "soak-rest-key-31c9", "openai": "soak-openai-key-a5e4"}


@dataclass
class System:
    root: Path
    cfg: SoakConfig
    pg: PgServer
    moto: ManagedProcess
    stack: Stack
    seen_pids: set[int] = field(default_factory=set)  # every process of the system ever seen

    @property
    def db_url(self) -> str:
        return self.stack.db_url

    @property
    def base(self) -> str:
        return self.stack.base

    def prep_names(self) -> list[str]:
        return [Stack.prep_name(n) for n in range(self.cfg.prep_workers)]

    def start_gpu(self, wait: bool = False) -> None:
        """The GPU worker, as a supervisor restarts it; ``wait``: until its engine is up."""
        proc = self.stack.start("worker-gpu", "worker", "--queues", "gpu")
        if wait:
            wait_for_log(proc, "result writer processes", 120)

    def deploy(self, revision: str) -> None:
        """A new model revision on the GPU worker (a daily deploy): results made by the one before are
        outdated, and the nightly reprocess recomputes them as new versions."""
        self.stack.env["VLMQ_MODEL__REVISION"] = revision
        self.start_gpu()  # stops the old one first (SIGTERM: a graceful restart)

    def roots(self) -> dict[str, int]:
        """The main pid of each server and vlmq process, by name."""
        pids = {name: p.pid for name, p in self.stack.procs.items() if p.alive}
        pids |= {"postgres": self.pg.server.pid, "redis": self.stack.redis_proc.pid, "moto": self.moto.pid}
        return pids

    def trees(self) -> dict[str, list[psutil.Process]]:
        """Each root with its children (a prep pool, result writers, Postgres backends); remembered."""
        out: dict[str, list[psutil.Process]] = {}
        for name, pid in self.roots().items():
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(pid)
                out[name] = [root, *root.children(recursive=True)]
                self.seen_pids.update(p.pid for p in out[name])
        return out

    def api_up(self) -> bool:
        try:
            return httpx.get(f"{self.base}/healthz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        self.trees()  # the last look at who is running
        self.stack.stop()
        self.moto.stop()
        self.pg.stop()

    def leftovers(self) -> list[str]:
        """Processes of the system still alive after ``stop``: must be none."""
        alive = []
        for pid in sorted(self.seen_pids):
            with contextlib.suppress(psutil.Error):
                p = psutil.Process(pid)
                if p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(f"{pid} {' '.join(p.cmdline())[:120]}")
        return alive


def start(root: Path, cfg: SoakConfig) -> System:
    pg = PgServer(root / "pg")
    moto, url = start_moto(root / "moto")
    keys = ",".join(f"{key}:{tenant}" for tenant, key in TENANTS.items())
    try:
        stack = Stack(root / "stack", pg, int(url.rsplit(":", 1)[1]), stack_env(cfg, METRICS_TOKEN, keys))
    except BaseException:
        moto.stop()
        pg.stop()
        raise
    system = System(root, cfg, pg, moto, stack)
    try:
        stack.start_all(prep_workers=cfg.prep_workers)
        wait_until(system.api_up, "the soak's API", 60)
    except BaseException:
        system.stop()
        raise
    os.environ["VLMQ_CLOCK__SIMULATED"] = "true"  # this process moves the clock (jobs.clock.advance)
    return system
