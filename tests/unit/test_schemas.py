import pytest
from pydantic import ValidationError

from jobs.presets import DEFAULT, prompt_version
from jobs.schemas import ItemIn, JobCreate, JobOptions


def test_job_create_defaults() -> None:
    job = JobCreate.model_validate({"items": [{"custom_id": "a-1", "uri": "s3://b/k.pdf"}]})
    assert job.prompt is None and job.options == JobOptions()


@pytest.mark.parametrize(
    "uri", ["file:///etc/passwd", "http://x/y.pdf", "ftp://x/y", "s3://bucket-only", "s3://b/dir/"]
)
def test_only_s3_object_or_https_uris(uri: str) -> None:
    with pytest.raises(ValidationError, match="s3://bucket/key"):
        ItemIn(custom_id="a", uri=uri)


def test_https_passes_the_schema_and_is_left_to_the_server_policy() -> None:
    # Whether https is allowed at all is a setting (jobs.uris); the schema checks only the form.
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
