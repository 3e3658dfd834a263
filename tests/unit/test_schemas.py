import pytest
from pydantic import ValidationError

from jobs.prompts.presets import DEFAULT, prompt_version
from jobs.schemas import ItemIn, JobCreate, JobOptions


def test_job_create_defaults() -> None:
    job = JobCreate.model_validate({"items": [{"custom_id": "a-1", "uri": "s3://b/k.pdf"}]})
    assert job.prompt is None and job.options == JobOptions()


@pytest.mark.parametrize("uri", ["s3://bucket-only", "s3://b/dir/"])
def test_an_s3_uri_names_an_object(uri: str) -> None:
    with pytest.raises(ValidationError, match="s3://bucket/key"):
        ItemIn(custom_id="a", uri=uri)


@pytest.mark.parametrize("uri", ["file:///etc/passwd", "http://x/y.pdf", "ftp://x/y"])
def test_other_schemes_pass_the_schema_and_are_refused_by_the_policy(uri: str) -> None:
    """The scheme is the server's policy (jobs.adapters.uris: forbidden_uri, as README says), not the schema's
    (which answered invalid_request for file:// before)."""
    ItemIn(custom_id="a", uri=uri)


@pytest.mark.parametrize(
    "custom_id", ["req 1", "ünïcødé 文档 📄", "a/b/../c", "<script>alert(1)</script>", "-lead", "x" * 255]
)
def test_any_custom_id_is_taken(custom_id: str) -> None:
    assert ItemIn(custom_id=custom_id, uri="s3://b/k.pdf").custom_id == custom_id


@pytest.mark.parametrize(
    ("custom_id", "needle"),
    [("", "empty"), ("x" * 256, "at most 255"), ("a\x00b", "NUL"), ("\ud800", "lone surrogate")],
)
def test_what_postgres_cannot_hold_is_refused_by_name(custom_id: str, needle: str) -> None:
    with pytest.raises(ValidationError, match=needle):
        ItemIn(custom_id=custom_id, uri="s3://b/k.pdf")


def test_https_passes_the_schema_and_is_left_to_the_server_policy() -> None:
    # Whether https is allowed at all is a setting (jobs.adapters.uris); the schema checks only the form.
    assert ItemIn(custom_id="a", uri="https://x/y.pdf").uri == "https://x/y.pdf"


def test_priority_is_normal_or_low() -> None:
    items = [{"custom_id": "a", "uri": "s3://b/k"}]
    assert JobCreate.model_validate({"items": items}).priority == "normal"
    assert JobCreate.model_validate({"items": items, "priority": "low"}).priority == "low"
    with pytest.raises(ValidationError, match="priority"):
        JobCreate.model_validate({"items": items, "priority": "urgent"})


def test_duplicate_custom_ids_are_named() -> None:
    items = [{"custom_id": c, "uri": "s3://b/k"} for c in ("x", "y", "x")]
    with pytest.raises(ValidationError, match="repeated: x"):
        JobCreate.model_validate({"items": items})


def test_unknown_fields_are_rejected() -> None:
    with pytest.raises(ValidationError, match="extra"):
        JobCreate.model_validate({"items": [{"custom_id": "a", "uri": "s3://b/k"}], "colour": 3})


def test_prompt_version_names_the_text() -> None:
    assert prompt_version(None) == DEFAULT.version
    assert prompt_version("Read it.") == prompt_version("Read it.") != prompt_version("Read it!")
    assert prompt_version("Read it.").startswith("custom-")


def test_a_job_has_items_or_a_source_and_a_source_one_kind() -> None:
    item = {"custom_id": "a", "uri": "s3://b/a.pdf"}
    assert JobCreate.model_validate({"source": {"prefix": "s3://b/**/*.pdf"}}).source.kind == "prefix"  # type: ignore[union-attr]
    assert JobCreate.model_validate({"source": {"manifest": "s3://b/l.csv", "incremental": False}}).source
    for bad, words in (
        ({}, "give exactly one"),
        ({"items": [item], "source": {"prefix": "s3://b/"}}, "give exactly one"),
        ({"source": {}}, "a prefix or a manifest"),
        ({"source": {"prefix": "s3://b/", "manifest": "s3://b/l.csv"}}, "a prefix or a manifest"),
        ({"source": {"prefix": "s3://b/"}, "options": {"task": "qa"}}, "needs a prompt"),
    ):
        with pytest.raises(ValidationError, match=words):
            JobCreate.model_validate(bad)
    qa = {"source": {"manifest": "s3://b/l.jsonl"}, "options": {"task": "qa"}}
    assert JobCreate.model_validate(qa)  # a manifest's lines may carry the questions
