"""The error tree. Every error has a stable ``code`` (stored on failed items, sent in API errors).

VlmqError                     error
├── PermanentError            permanent_error: bad input or a state retrying cannot fix; never retried
│   ├── InvalidInput          invalid_input
│   │   └── ForbiddenUri          forbidden_uri: scheme, bucket or address not allowed (jobs.uris)
│   ├── MediaError            media_error
│   │   ├── CorruptMedia          corrupt_media
│   │   ├── EncryptedDocument     encrypted_document
│   │   ├── EmptyDocument         empty_document
│   │   ├── TooManyPages          too_many_pages
│   │   ├── UnsupportedMedia      unsupported_media
│   │   └── SourceTooLarge        source_too_large
│   ├── NotFound              not_found
│   ├── Conflict              conflict
│   ├── TenantLimitExceeded   tenant_limit_exceeded: too many unfinished jobs or items (HTTP 429)
│   ├── Unauthorized          unauthorized
│   ├── InvalidTransition     invalid_transition
│   ├── Expired               expired: the job passed its expiry time before this item finished
│   ├── LeaseExpired          lease_expired: the worker holding the item stopped (killed, lost), too often
│   └── BadModelOutput        bad_model_output
└── RetryableError            retryable_error: transient (S3, network, database); tasks retry with backoff
    ├── TransportError        transport_error: infrastructure unreachable; up to max_transport_attempts
    │   ├── StorageUnavailable    storage_unavailable
    │   └── DatabaseUnavailable   database_unavailable
    └── EngineError           engine_error
"""

from __future__ import annotations

from typing import ClassVar


class VlmqError(Exception):
    """Root of every vlmq error: a stable ``code`` per class and a message naming what was wrong."""

    code: ClassVar[str] = "error"

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.code)  # one positional arg: pickles through Celery intact

    @property
    def message(self) -> str:
        return str(self.args[0])


class PermanentError(VlmqError):
    code = "permanent_error"


class RetryableError(VlmqError):
    code = "retryable_error"


class InvalidInput(PermanentError):
    code = "invalid_input"


class MediaError(PermanentError):
    code = "media_error"


class CorruptMedia(MediaError):
    code = "corrupt_media"


class EncryptedDocument(MediaError):
    code = "encrypted_document"


class EmptyDocument(MediaError):
    code = "empty_document"


class TooManyPages(MediaError):
    code = "too_many_pages"


class UnsupportedMedia(MediaError):
    code = "unsupported_media"


class SourceTooLarge(MediaError):
    code = "source_too_large"


class ForbiddenUri(InvalidInput):
    code = "forbidden_uri"


class NotFound(PermanentError):
    code = "not_found"


class Conflict(PermanentError):
    code = "conflict"


class Unauthorized(PermanentError):
    code = "unauthorized"


class TenantLimitExceeded(PermanentError):
    code = "tenant_limit_exceeded"


class InvalidTransition(PermanentError):
    code = "invalid_transition"


class Expired(PermanentError):
    code = "expired"


class LeaseExpired(PermanentError):
    code = "lease_expired"


class BadModelOutput(PermanentError):
    code = "bad_model_output"


class TransportError(RetryableError):
    code = "transport_error"


class StorageUnavailable(TransportError):
    code = "storage_unavailable"


class DatabaseUnavailable(TransportError):
    code = "database_unavailable"


class EngineError(RetryableError):
    code = "engine_error"
