"""Where a job's dataset may be written besides its own prefix (UriPolicy.check_write): only under a write
grant, never the server's own prefixes, never another tenant's area, no '.'/'..' segments, no wildcard;
reading never implies writing."""

from __future__ import annotations

import pytest

from jobs.adapters.uris import UriPolicy
from jobs.errors import ForbiddenUri

WRITES = frozenset(
    {
        ("acme", "acme-out", "captions/"),
        ("*", "shared-out", ""),
        ("beta", "shared-out", "beta/"),
        ("*", "vlmq", ""),
    }
)
POLICY = UriPolicy(
    schemes=frozenset({"s3"}),
    server_bucket="vlmq",
    grants=frozenset({("acme", "corpus", "")}),
    write_grants=WRITES,
)


@pytest.mark.parametrize(
    ("uri", "written"),
    [
        ("s3://acme-out/captions/run-7/", "s3://acme-out/captions/run-7/"),
        ("s3://acme-out/captions/run-7", "s3://acme-out/captions/run-7/"),  # a prefix is a folder
        ("s3://shared-out/acme/run-1/", "s3://shared-out/acme/run-1/"),  # under "*", no one else's
        ("s3://vlmq/exports/acme/", "s3://vlmq/exports/acme/"),  # the server's bucket, outside its prefixes
    ],
)
def test_a_prefix_under_a_write_grant_is_written_as_a_folder(uri: str, written: str) -> None:
    assert POLICY.check_write(uri, "acme") == written


@pytest.mark.parametrize(
    ("uri", "tenant", "needle"),
    [
        ("s3://acme-out/captions/run-7/", "beta", "not granted for writing"),  # another tenant's grant
        ("s3://shared-out/beta/run-1/", "acme", "not granted for writing"),  # beta's area, "*" or not
        ("s3://corpus/out/", "acme", "not granted for writing"),  # read-granted only
        ("s3://elsewhere/out/", "acme", "not granted for writing"),
        ("s3://acme-out/other/", "acme", "not granted for writing"),
        ("s3://acme-out/captions/../other/", "acme", "'..'"),
        ("s3://acme-out/captions/./x/", "acme", "'..'"),
        ("s3://acme-out/captions/*/", "acme", "plain prefix"),
        ("s3://vlmq/jobs/", "acme", "server's own storage"),
        ("s3://vlmq/jobs", "acme", "server's own storage"),
        ("s3://vlmq/uploads/acme/out/", "acme", "server's own storage"),
        ("s3://vlmq/results/x/", "acme", "server's own storage"),
        ("s3://vlmq/batches/", "acme", "server's own storage"),
        ("https://example.com/out/", "acme", "s3://bucket/prefix/"),
        ("s3:///x/", "acme", "s3://bucket/prefix/"),
    ],
)
def test_a_prefix_the_tenant_may_not_write_is_refused(uri: str, tenant: str, needle: str) -> None:
    with pytest.raises(ForbiddenUri, match=needle.replace("*", r"\*")):
        POLICY.check_write(uri, tenant)


def test_another_tenants_area_is_refused_in_the_words_of_a_prefix_granted_to_no_one() -> None:
    """No oracle of other tenants' grants."""
    messages = []
    for uri in ("s3://shared-out/beta/x/", "s3://nowhere/beta/x/"):
        with pytest.raises(ForbiddenUri) as e:
            POLICY.check_write(uri, "acme")
        messages.append(str(e.value).replace(uri, "URI"))
    assert messages[0] == messages[1]


def test_a_tenant_named_for_a_prefix_writes_there_whoever_else_is() -> None:
    assert POLICY.check_write("s3://shared-out/beta/x/", "beta") == "s3://shared-out/beta/x/"
