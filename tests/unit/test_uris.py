"""The input URI policy: schemes, whose s3 objects a tenant may name, addresses (literal, resolved, after
redirects), size caps. The https fetch runs against a fake resolver and httpx's MockTransport (no network)."""

from __future__ import annotations

import httpx
import pytest

from jobs.adapters.uris import UriPolicy, fetch_https
from jobs.errors import ForbiddenUri, InvalidInput, SourceTooLarge, StorageUnavailable

GRANTS = frozenset({("*", "inputs", ""), ("acme", "corpus", "acme/"), ("*", "vlmq", "shared/")})
S3_ONLY = UriPolicy(schemes=frozenset({"s3"}), server_bucket="vlmq", grants=GRANTS)
HTTPS = UriPolicy(schemes=frozenset({"s3", "https"}), server_bucket="vlmq", grants=GRANTS)
PUBLIC = {"docs.example.com": ["93.184.216.34"], "cdn.example.com": ["151.101.1.1", "151.101.65.1"]}


def resolver(table: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    def resolve(host: str, port: int) -> list[str]:
        return table[host]

    return resolve


@pytest.mark.parametrize(
    ("policy", "uri", "needle"),
    [
        (S3_ONLY, "https://docs.example.com/a.pdf", "scheme https:// is not allowed"),
        (S3_ONLY, "file:///etc/passwd", "scheme file:// is not allowed"),
        (UriPolicy(schemes=frozenset({"file", "s3"}), server_bucket="vlmq"), "file:///etc/passwd", "file://"),
        (S3_ONLY, "s3://elsewhere/a.pdf", "s3://elsewhere/a.pdf is not granted to tenant 'beta'"),
        (HTTPS, "https://127.0.0.1/a.pdf", "loopback, link-local or private"),
        (HTTPS, "https://169.254.169.254/latest/meta-data", "169.254.169.254"),
        (HTTPS, "https://10.1.2.3/a.pdf", "10.1.2.3"),
        (HTTPS, "https://192.168.0.1:8443/a.pdf", "192.168.0.1"),
        (HTTPS, "https://[::1]/a.pdf", "::1"),
        (HTTPS, "https://[::ffff:127.0.0.1]/a.pdf", "::ffff:127.0.0.1"),
        (HTTPS, "https://[fe80::1]/a.pdf", "fe80::1"),
        (HTTPS, "https://localhost/a.pdf", "localhost"),
        (HTTPS, "https://api.localhost/a.pdf", "api.localhost"),
        (HTTPS, "https://user:pw@docs.example.com/a.pdf", "credentials"),
        (HTTPS, "https://127.1/a.pdf", "127.0.0.1"),  # legacy forms: resolvers read them as addresses
        (HTTPS, "https://2130706433/a.pdf", "127.0.0.1"),
        (HTTPS, "https://0x7f000001/a.pdf", "127.0.0.1"),
        (HTTPS, "https://0177.0.0.1/a.pdf", "127.0.0.1"),
        (HTTPS, "https://0xa9.254.169.254/latest", "169.254.169.254"),
    ],
)
def test_refused_at_submission(policy: UriPolicy, uri: str, needle: str) -> None:
    with pytest.raises(ForbiddenUri, match=needle.replace(".", r"\.").replace("[", r"\[")):
        policy.check(uri, "beta", "doc-1")


@pytest.mark.parametrize("uri", ["s3://inputs/a.pdf", "https://docs.example.com/a.pdf", "https://8.8.8.8/x"])
def test_allowed_at_submission(uri: str) -> None:
    HTTPS.check(uri, "beta")


@pytest.mark.parametrize(
    ("tenant", "uri"),
    [
        ("beta", "s3://vlmq/uploads/beta/0123abcd/page.png"),  # its own upload
        ("acme", "s3://corpus/acme/2026/a.pdf"),  # granted to it
        ("beta", "s3://vlmq/shared/manual.pdf"),  # granted to every tenant
        ("beta", "s3://inputs/x/y.pdf"),  # a whole bucket granted to every tenant
    ],
)
def test_a_tenant_names_its_own_and_granted_objects(tenant: str, uri: str) -> None:
    S3_ONLY.check(uri, tenant)


@pytest.mark.parametrize(
    ("uri", "needle"),
    [
        (
            "s3://vlmq/uploads/acme/0123abcd/page.png",
            "own uploads \\(s3://vlmq/uploads/beta/\\)",
        ),  # another's
        ("s3://corpus/acme/a.pdf", "not granted to tenant 'beta'"),  # granted to another tenant
        ("s3://corpus/acme-evil/a.pdf", "not granted"),  # a prefix is a prefix of keys, not of names
        ("s3://vlmq/files/acme/file-123", "the server's own storage"),  # a batch input file
        ("s3://vlmq/media/abc/1288px/page-00001.png", "the server's own storage"),
        ("s3://vlmq/results/j/i/v1.json", "the server's own storage"),
        ("s3://vlmq/jobs/j/output.jsonl", "the server's own storage"),
        ("s3://vlmq/batches/b/rejected.jsonl", "the server's own storage"),
        ("s3://vlmq/uploads/beta/../acme/x/page.png", r"'\.' or '\.\.' segments"),
        ("s3://vlmq/shared/../media/a.png", r"'\.' or '\.\.' segments"),
        ("s3://vlmq/elsewhere/a.pdf", "not granted"),  # the server's bucket is not granted as a whole
    ],
)
def test_a_tenant_cannot_name_others_or_the_servers_objects(uri: str, needle: str) -> None:
    with pytest.raises(ForbiddenUri, match=needle):
        S3_ONLY.check(uri, "beta")


def test_a_grant_of_the_servers_bucket_never_opens_its_own_prefixes() -> None:
    everything = UriPolicy(
        schemes=frozenset({"s3"}), server_bucket="vlmq", grants=frozenset({("*", "vlmq", "")})
    )
    everything.check("s3://vlmq/inputs/a.pdf", "beta")
    for uri in ("s3://vlmq/uploads/acme/d/a.png", "s3://vlmq/media/x/a.png", "s3://vlmq/files/acme/f"):
        with pytest.raises(ForbiddenUri, match="server's own storage"):
            everything.check(uri, "beta")


def test_refusals_say_the_same_whether_the_object_exists_or_not() -> None:
    """No oracle: the check makes no S3 request, so its answer cannot depend on the object."""
    messages = []
    for sha in ("real-sha", "no-such-sha"):
        with pytest.raises(ForbiddenUri) as refused:
            S3_ONLY.check(f"s3://vlmq/uploads/acme/{sha}/page.png", "beta")
        messages.append(str(refused.value).replace(sha, "X"))
    assert messages[0] == messages[1]


def test_private_addresses_only_by_setting() -> None:
    lenient = UriPolicy(schemes=frozenset({"https"}), server_bucket="vlmq", allow_private=True)
    lenient.check("https://10.0.0.5/a.pdf", "beta")
    assert lenient.checked_addresses("intranet", 443, resolver({"intranet": ["10.0.0.5"]})) == ["10.0.0.5"]


def test_every_resolved_address_is_checked() -> None:
    """One private address among public ones refuses the host (a DNS answer could pick either)."""
    mixed = resolver({"evil.example.com": ["93.184.216.34", "127.0.0.1"]})
    with pytest.raises(ForbiddenUri, match=r"127\.0\.0\.1"):
        HTTPS.checked_addresses("evil.example.com", 443, mixed)


def _transport(routes: dict[str, httpx.Response], seen: list[httpx.Request]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return routes[f"{request.headers['host']}{request.url.raw_path.decode()}"]

    return httpx.MockTransport(handle)


def test_fetch_connects_to_the_checked_address_with_the_real_host_name() -> None:
    seen: list[httpx.Request] = []
    routes = {"docs.example.com/a.pdf": httpx.Response(200, content=b"%PDF-1.7 ok")}
    data = fetch_https(
        HTTPS, "https://docs.example.com/a.pdf", 1000, resolver(PUBLIC), _transport(routes, seen)
    )
    assert data == b"%PDF-1.7 ok"
    (req,) = seen
    assert req.url.host == "93.184.216.34" and req.headers["host"] == "docs.example.com"
    assert req.extensions["sni_hostname"] == "docs.example.com"  # TLS still verified for the name


def test_a_redirect_to_a_private_address_is_refused() -> None:
    seen: list[httpx.Request] = []
    table = {**PUBLIC, "internal.example.com": ["10.0.0.7"]}
    routes = {
        "docs.example.com/a.pdf": httpx.Response(302, headers={"location": "https://cdn.example.com/b.pdf"}),
        "cdn.example.com/b.pdf": httpx.Response(301, headers={"location": "https://internal.example.com/c"}),
    }
    with pytest.raises(ForbiddenUri, match=r"10\.0\.0\.7"):
        fetch_https(HTTPS, "https://docs.example.com/a.pdf", 1000, resolver(table), _transport(routes, seen))
    assert len(seen) == 2  # the private host was never contacted


def test_a_redirect_to_another_scheme_is_refused() -> None:
    routes = {
        "docs.example.com/a.pdf": httpx.Response(302, headers={"location": "http://docs.example.com/a"})
    }
    with pytest.raises(ForbiddenUri, match="http://"):
        fetch_https(HTTPS, "https://docs.example.com/a.pdf", 1000, resolver(PUBLIC), _transport(routes, []))


def test_redirect_loops_stop() -> None:
    routes = {"docs.example.com/a.pdf": httpx.Response(302, headers={"location": "/a.pdf"})}
    with pytest.raises(ForbiddenUri, match="redirects"):
        fetch_https(HTTPS, "https://docs.example.com/a.pdf", 1000, resolver(PUBLIC), _transport(routes, []))


def test_size_is_capped_while_reading() -> None:
    def chunks():  # type: ignore[no-untyped-def]
        yield from (b"x" * 400 for _ in range(100))  # no Content-Length: only counting can stop it

    routes = {"docs.example.com/a.pdf": httpx.Response(200, content=chunks())}
    with pytest.raises(SourceTooLarge, match="over the limit of 1000"):
        fetch_https(HTTPS, "https://docs.example.com/a.pdf", 1000, resolver(PUBLIC), _transport(routes, []))


@pytest.mark.parametrize(("status", "error"), [(404, InvalidInput), (503, StorageUnavailable)])
def test_http_errors_are_permanent_or_transient(status: int, error: type[Exception]) -> None:
    routes = {"docs.example.com/a.pdf": httpx.Response(status)}
    with pytest.raises(error, match=f"HTTP {status}"):
        fetch_https(HTTPS, "https://docs.example.com/a.pdf", 1000, resolver(PUBLIC), _transport(routes, []))
