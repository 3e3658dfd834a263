"""Which input URIs a tenant's job may name, and fetching the https ones safely. The one place of the rule.

Policy (settings ``inputs``; SECURITY.md has the threat model):
- a scheme must be listed in ``allowed_schemes`` (default: s3 only; never ``file``);
- s3://: a tenant names its own uploads (``uploads/TENANT/`` in the server's bucket) and the buckets or
  prefixes ``grants`` gives it (or gives "*", every tenant). The server's own prefixes
  (jobs.adapters.storage.SERVER_PREFIXES: others' uploads, batch files, rendered media, results, job outputs)
  are never reachable by naming them, whatever a grant says. Keys with ``.``/``..`` segments are
  refused (some S3 servers resolve them). A refusal names the rule, never an object's content, and is
  the same whether the object exists or not: it is no oracle;
- https://: the host must not be, or resolve to, a loopback, link-local, private or otherwise
  non-global address unless ``allow_private_addresses`` is set;
- writing (a job's dataset at a destination of the tenant's own, ``check_write``): s3:// only, a plain
  prefix within what ``write_grants`` gives the tenant, never the server's own prefixes, never a prefix
  granted by name to another tenant (a "*" grant does not reach it). Reading never implies writing.
Submission checks the form, ownership and literal addresses (cheap, no DNS); the fetch checks all of it
again for the item's tenant, resolves the host, checks every address it resolves to, connects to a
checked address (so a second DNS answer cannot swap in another), and repeats all of it for each redirect.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from jobs.adapters.storage import SERVER_PREFIXES, BlobStore, split_s3_uri, uploads_prefix
from jobs.config import Settings
from jobs.errors import ForbiddenUri, InvalidInput, SourceTooLarge, StorageUnavailable

Resolver = Callable[[str, int], list[str]]
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
EVERY_TENANT = "*"
_WILDCARDS = frozenset("*?[")  # a source's glob characters: a destination is a plain prefix


def _dot_segment(key: str) -> bool:
    """A key with a '.' or '..' segment: some S3 servers resolve them, reading or writing elsewhere."""
    return any(seg in (".", "..") for seg in key.split("/"))


def system_resolver(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise InvalidInput(f"cannot resolve host {host!r}: {e}") from e
    return sorted({str(info[4][0]) for info in infos})


def _grant_pairs(grants: Mapping[str, list[str]]) -> frozenset[tuple[str, str, str]]:
    """(tenant, bucket, key prefix) of each grant; a bare bucket grants all of it."""
    pairs = set()
    for tenant, uris in grants.items():
        for uri in uris:
            bucket, _, prefix = uri[5:].partition("/")
            pairs.add((tenant, bucket, prefix))
    return frozenset(pairs)


@dataclass(frozen=True)
class UriPolicy:
    schemes: frozenset[str]
    server_bucket: str
    grants: frozenset[tuple[str, str, str]] = frozenset()
    write_grants: frozenset[tuple[str, str, str]] = frozenset()
    allow_private: bool = False
    timeout: float = 30.0
    max_redirects: int = 5

    @classmethod
    def from_settings(cls, settings: Settings) -> UriPolicy:
        i = settings.inputs
        return cls(
            schemes=frozenset(s.lower() for s in i.allowed_schemes) - {"file"},
            server_bucket=settings.s3.bucket,
            grants=_grant_pairs(i.grants),
            write_grants=_grant_pairs(i.write_grants),
            allow_private=i.allow_private_addresses,
            timeout=i.https_timeout_seconds,
            max_redirects=i.max_redirects,
        )

    def check(self, uri: str, tenant: str, custom_id: str = "") -> None:
        """May ``tenant`` name ``uri``: scheme, ownership (s3), host form and literal addresses
        (https). No DNS, no S3 request."""
        who = f"item {custom_id!r}: " if custom_id else ""
        scheme = uri.partition("://")[0].lower() if "://" in uri else uri.partition(":")[0].lower()
        if scheme not in self.schemes:
            allowed = ", ".join(f"{s}://" for s in sorted(self.schemes))
            raise ForbiddenUri(f"{who}scheme {scheme}:// is not allowed; allowed: {allowed}")
        if scheme == "s3":
            self._check_s3(uri, tenant, who)
        else:
            self.check_https(uri, who)

    def _check_s3(self, uri: str, tenant: str, who: str) -> None:
        bucket, key = split_s3_uri(uri)
        if _dot_segment(key):
            raise ForbiddenUri(f"{who}s3 keys with '.' or '..' segments are not allowed")
        if bucket == self.server_bucket and key.startswith(uploads_prefix(tenant)):
            return  # the tenant's own upload
        if bucket == self.server_bucket and key.startswith(SERVER_PREFIXES):
            top = key.split("/", 1)[0]
            raise ForbiddenUri(
                f"{who}s3://{bucket}/{top}/ is the server's own storage; a job names its own uploads "
                f"(s3://{bucket}/{uploads_prefix(tenant)}) or the buckets and prefixes granted to its "
                "tenant (settings inputs.grants)"
            )
        for who_for, b, prefix in self.grants:
            if who_for in (tenant, EVERY_TENANT) and b == bucket and key.startswith(prefix):
                return
        raise ForbiddenUri(
            f"{who}s3://{bucket}/{key} is not granted to tenant {tenant!r}: a job names its own uploads "
            "or the buckets and prefixes granted to its tenant (settings inputs.grants)"
        )

    def check_write(self, uri: str, tenant: str) -> str:
        """May the server write ``tenant``'s job dataset under the prefix ``uri``; the prefix as written to
        (ending in ``/``). Pure, as ``check``: no S3 request. A prefix another tenant holds is refused in
        the same words as one granted to no one, so a refusal tells nothing of other tenants' grants."""
        what = f"dataset prefix {uri!r}"
        bucket, _, key = uri[5:].partition("/") if uri.startswith("s3://") else ("", "", "")
        if not bucket:
            raise ForbiddenUri(f"{what}: a dataset destination is an s3://bucket/prefix/ URI")
        key = key if not key or key.endswith("/") else key + "/"
        if _dot_segment(key):
            raise ForbiddenUri(f"{what}: '.' and '..' segments are not allowed")
        if _WILDCARDS & set(key):
            raise ForbiddenUri(f"{what}: a destination is a plain prefix; '*', '?' and '[' are not allowed")
        if bucket == self.server_bucket and key.startswith(SERVER_PREFIXES):
            raise ForbiddenUri(
                f"{what} is in the server's own storage (s3://{bucket}/{key.split('/')[0]}/); the job's "
                "dataset is always written there for it (GET /v1/jobs/{id}/dataset)"
            )
        if not self._may_write(tenant, bucket, key):
            raise ForbiddenUri(
                f"{what} is not granted for writing to tenant {tenant!r}: a dataset destination must lie "
                "under a prefix granted to its tenant (settings inputs.write_grants)"
            )
        return f"s3://{bucket}/{key}"

    def _may_write(self, tenant: str, bucket: str, key: str) -> bool:
        """Under a grant to the tenant by name; or under a "*" grant and under no other tenant's by name
        (a prefix granted to one tenant is that tenant's area, which "*" does not open to the others)."""
        within = {t for t, b, p in self.write_grants if b == bucket and key.startswith(p)}
        return tenant in within or within == {EVERY_TENANT}

    def check_https(self, uri: str, who: str = "") -> None:
        host = self._https_host(uri, who)
        if host == "localhost" or host.endswith(".localhost"):
            self._check_address(ipaddress.ip_address("127.0.0.1"), host, who)
        literal = _ip_or_none(host)
        if literal is not None:
            self._check_address(literal, host, who)

    def _https_host(self, uri: str, who: str) -> str:
        parts = urlsplit(uri)
        if parts.scheme.lower() != "https":
            raise ForbiddenUri(f"{who}only https:// may be fetched, not {parts.scheme}://")
        if parts.username or parts.password:
            raise ForbiddenUri(f"{who}credentials in the URI are not allowed")
        try:
            parts.port  # noqa: B018 - raises on a port out of range
        except ValueError as e:
            raise InvalidInput(f"{who}bad port in {uri!r}") from e
        if not parts.hostname:
            raise InvalidInput(f"{who}https URI needs a host: {uri!r}")
        return parts.hostname.lower().rstrip(".")

    def _check_address(self, ip: IpAddress, host: str, who: str = "") -> None:
        if self.allow_private:
            return
        mapped = getattr(ip, "ipv4_mapped", None)
        real = mapped or ip
        if not real.is_global or real.is_multicast:
            raise ForbiddenUri(
                f"{who}host {host!r} is (or resolves to) {ip}, a loopback, link-local or private address; "
                "not allowed (settings: inputs.allow_private_addresses)"
            )

    def checked_addresses(self, host: str, port: int, resolver: Resolver) -> list[str]:
        """Every address ``host`` resolves to, each checked; one bad address refuses the host."""
        addresses = resolver(host, port)
        if not addresses:
            raise InvalidInput(f"host {host!r} resolves to no address")
        for a in addresses:
            self._check_address(ipaddress.ip_address(a), host)
        return addresses


def _ip_or_none(host: str) -> IpAddress | None:
    """The address a host names literally, the legacy IPv4 forms included ("127.1", "2130706433",
    "0x7f000001", "0177.0.0.1"), which resolvers read as addresses without asking DNS."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    if not all(c in "0123456789abcdefx." for c in host):
        return None  # a name (inet_aton below takes only numbers, dots and 0x)
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def read_source(store: BlobStore, settings: Settings, uri: str, tenant: str, max_bytes: int) -> bytes:
    """A source's bytes from S3 or (where allowed) https, with the policy checked again at fetch time
    for the job's tenant (grants may have changed since submission)."""
    policy = UriPolicy.from_settings(settings)
    policy.check(uri, tenant)
    if uri.startswith("s3://"):
        return store.read_uri(uri, max_bytes=max_bytes)
    return fetch_https(policy, uri, max_bytes)


def fetch_https(
    policy: UriPolicy,
    uri: str,
    max_bytes: int,
    resolver: Resolver = system_resolver,
    transport: httpx.BaseTransport | None = None,
) -> bytes:
    url = uri
    with httpx.Client(transport=transport, timeout=policy.timeout, follow_redirects=False) as client:
        for _ in range(policy.max_redirects + 1):
            policy.check_https(url)  # a redirect may lead anywhere: the same rules again
            parts = urlsplit(url)
            host, port = parts.hostname or "", parts.port or 443
            ip = policy.checked_addresses(host, port, resolver)[0]
            response = _get(client, url, host, port, ip, max_bytes)
            if isinstance(response, str):
                url = urljoin(url, response)
                continue
            return response
    raise ForbiddenUri(f"{uri}: more than {policy.max_redirects} redirects")


def _get(client: httpx.Client, url: str, host: str, port: int, ip: str, max_bytes: int) -> bytes | str:
    """GET ``url`` from the checked address ``ip`` (TLS still verified for ``host``); the body, or the
    redirect target."""
    parts = urlsplit(url)
    netloc = f"[{ip}]" if ":" in ip else ip
    pinned = parts._replace(netloc=f"{netloc}:{port}").geturl()
    headers = {"Host": parts.netloc.rpartition("@")[2]}
    extensions: dict[str, Any] = {"sni_hostname": host}
    try:
        with client.stream("GET", pinned, headers=headers, extensions=extensions) as r:
            if r.is_redirect and "location" in r.headers:
                return str(r.headers["location"])
            _check_status(r, url)
            return _read_capped(r, url, max_bytes)
    except httpx.TransportError as e:
        raise StorageUnavailable(f"{url}: {type(e).__name__}: {e}") from e


def _check_status(r: httpx.Response, url: str) -> None:
    if r.status_code >= 500 or r.status_code == 429:
        raise StorageUnavailable(f"{url}: HTTP {r.status_code}")
    if r.status_code >= 300:
        raise InvalidInput(f"{url}: HTTP {r.status_code}")


def _read_capped(r: httpx.Response, url: str, max_bytes: int) -> bytes:
    declared = int(r.headers.get("content-length") or 0)
    if declared > max_bytes:
        raise SourceTooLarge(f"{url} is {declared} bytes; the limit is {max_bytes}")
    chunks, size = [], 0
    for chunk in r.iter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise SourceTooLarge(f"{url} is over the limit of {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
