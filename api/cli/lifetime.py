"""How long the processes a `vlmq` command starts live: no longer than the command itself.

Two ways a command ends, two mechanisms:
- SIGTERM or SIGHUP (a service manager, a closed terminal, ``kill``): ``stop_on_signals`` turns them into
  the exception Ctrl-C raises, so the same cleanup runs: each server stopped in turn, dev.env removed.
- SIGKILL, a crash, anything that runs no cleanup: each child was started with ``die_with_parent``, and
  the kernel sends it its stop signal when the command dies.

Why the kernel's parent-death signal (Linux ``prctl(PR_SET_PDEATHSIG)``) rather than a watchdog: it
needs no extra process, no polling and no pipe the servers would have to read (PostgreSQL, Redis and
moto read none of ours), and it fires however the parent died. It reaches the child we started only;
that is enough, because each of those stops what it started: the postmaster, told SIGINT (its fast
shutdown), ends its own backends, as `vlmq worker` ends its pool. Its one catch: the signal follows
the *thread* that started the child, so start children from a thread that lives as long as the
process (the CLI's main thread does). Elsewhere than Linux there is no such call, and only the signal
handlers apply.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(sig: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` after which the child gets ``sig`` when this process dies; None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the forked child only calls it
    parent = os.getpid()

    def arm() -> None:
        prctl(PR_SET_PDEATHSIG, sig)
        if os.getppid() != parent:  # the parent died before prctl: the signal would never come
            os.kill(os.getpid(), sig)

    return arm


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where Ctrl-C raises KeyboardInterrupt, so the same cleanup runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def stop_on_signals(signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGHUP)) -> Iterator[None]:
    """Within: the first of ``signals`` raises Stopped. A second one while stopping ends the process at
    once (the default action); its children still get their stop signal from ``die_with_parent``."""

    def handler(signum: int, _frame: object) -> None:
        for s in signals:
            signal.signal(s, signal.SIG_DFL)
        raise Stopped(signum)

    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
