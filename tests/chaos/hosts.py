"""Several "hosts" on one machine (issue 27): network namespaces of the test's own, each with one end of
a veth pair whose other end is on a bridge in the test's namespace. The services stay where the chaos
stack starts them (its own Postgres, Redis, moto and API, on 127.0.0.1); the bridge's address reaches
them through TCP proxies, so a worker "host" sees only that address: code that assumed localhost
would find nothing there. Cutting a host sets its link down: its connections hang, as a host that
drops off the network, and nothing tells it.

Needs root and iproute2 (``ip netns``); ``available()`` says why not otherwise."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from urllib.parse import urlsplit, urlunsplit

from tests.chaos.proxy import Proxy
from tests.chaos.stack import Stack


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def available() -> str | None:
    """None when namespaces can be made here, else why not."""
    if shutil.which("ip") is None:
        return "iproute2's ip is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"vq-probe-{uuid.uuid4().hex[:6]}"
    try:
        _ip("netns", "add", probe)
    except (subprocess.CalledProcessError, OSError) as e:
        return f"ip netns add failed: {getattr(e, 'stderr', b'') or e}"
    _ip("netns", "delete", probe)
    return None


class Hosts:
    """``n`` worker hosts on a bridge; host i has address 10.213.X.(i+2), the bridge 10.213.X.1."""

    def __init__(self, n: int) -> None:
        tag = uuid.uuid4().hex[:5]
        self.subnet = f"10.213.{int(tag, 16) % 200 + 20}"
        self.gateway = f"{self.subnet}.1"
        self.bridge = f"vqb{tag}"
        self.names = [f"vq-{tag}-h{i}" for i in range(n)]
        self._links = [f"vqh{tag}{i}" for i in range(n)]  # the bridge's end of host i's cable
        self._made: list[list[str]] = []
        try:
            self._do("link", "add", self.bridge, "type", "bridge", undo=["link", "delete", self.bridge])
            _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for i, (ns, link) in enumerate(zip(self.names, self._links, strict=True)):
                self._do("netns", "add", ns, undo=["netns", "delete", ns])
                peer = f"vqn{tag}{i}"
                cable = ["link", "add", link, "type", "veth", "peer", "name", peer]
                self._do(*cable, undo=["link", "delete", link])
                _ip("link", "set", peer, "netns", ns)
                _ip("link", "set", link, "master", self.bridge, "up")
                _ip("-n", ns, "addr", "add", f"{self.subnet}.{i + 2}/24", "dev", peer)
                _ip("-n", ns, "link", "set", peer, "up")
                _ip("-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self.remove()
            raise

    def _do(self, *args: str, undo: list[str]) -> None:
        _ip(*args)
        self._made.append(undo)

    def cut(self, i: int) -> None:
        """Host i drops off the network (its cable out): no reset, its connections just hang."""
        _ip("link", "set", self._links[i], "down")

    def mend(self, i: int) -> None:
        _ip("link", "set", self._links[i], "up")

    def remove(self) -> None:
        for undo in reversed(self._made):
            subprocess.run(["ip", *undo], capture_output=True, timeout=30)
        self._made.clear()


class Remote:
    """The chaos stack's services as a worker host reaches them: through proxies on the bridge."""

    def __init__(self, stack: Stack, hosts: Hosts) -> None:
        self.stack, self.hosts = stack, hosts
        self.proxies: list[Proxy] = []
        self.env = {
            **stack.env,
            "VLMQ_DB__URL": self._via(stack.env["VLMQ_DB__URL"]),
            "VLMQ_REDIS__URL": self._via(stack.env["VLMQ_REDIS__URL"]),
            "VLMQ_S3__ENDPOINT_URL": self._via(stack.env["VLMQ_S3__ENDPOINT_URL"]),
        }

    def _via(self, url: str) -> str:
        """``url`` with its 127.0.0.1:port replaced by a proxy on the bridge's address."""
        parts = urlsplit(url)
        assert parts.hostname == "127.0.0.1" and parts.port, url
        proxy = Proxy(parts.port, host=self.hosts.gateway)
        self.proxies.append(proxy)
        netloc = parts.netloc.replace(f"127.0.0.1:{parts.port}", f"{self.hosts.gateway}:{proxy.port}")
        return urlunsplit(parts._replace(netloc=netloc))

    def start_worker(self, host: int, name: str, *args: str) -> None:
        """``vlmq worker ARGS`` on host ``host``, as the stack starts its own (its log, its name)."""
        ns = self.hosts.names[host]
        self.stack.start(name, *args, prefix=["ip", "netns", "exec", ns], env=self.env)

    def stop(self) -> None:
        for p in self.proxies:
            p.down()
