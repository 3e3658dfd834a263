"""The error tree. Every error has a stable ``code`` (stored on failed items, sent in API errors).

VlmqError                     error
├── PermanentError            permanent_error: bad input or a state retrying cannot fix; never retried
│   ├── InvalidInput          invalid_input
│   │   ├── PromptMediaLimit      prompt_media_limit: more media in one prompt than GLM-4.1V takes
│   │   ├── ForbiddenUri          forbidden_uri: scheme, object or address not allowed (jobs.adapters.uris)
│   │   └── InvalidManifestLine   invalid_manifest_line: a manifest line naming no item (jobs.listings)
│   ├── MediaError            media_error
│   │   ├── CorruptMedia          corrupt_media
│   │   │   └── CorruptVideo          corrupt_video: unreadable, truncated, not a video, crashed the decoder
│   │   ├── EncryptedDocument     encrypted_document
│   │   ├── EmptyDocument         empty_document
│   │   ├── TooManyPages          too_many_pages
│   │   ├── EmptyVideo            empty_video: zero bytes, or a container with no frames
│   │   ├── VideoTooLong          video_too_long: over limits.max_video_seconds
│   │   ├── VideoDecodeTimeout    video_decode_timeout: decoding took over media.video_decode_timeout_s
│   │   ├── UnsupportedMedia      unsupported_media
│   │   │   ├── UnsupportedCodec      unsupported_codec: a video stream no decoder here reads
│   │   │   └── NoVideoStream         no_video_stream: a container with audio or data only
│   │   ├── PagesOutOfRange       pages_out_of_range
│   │   ├── ExtremeAspectRatio    extreme_aspect_ratio
│   │   ├── ConversionFailed      conversion_failed
│   │   │   └── ConversionTimeout     conversion_timeout
│   │   └── SourceTooLarge        source_too_large
│   │       ├── ImageTooLarge         image_too_large
│   │       └── VideoTooLarge         video_too_large: over limits.max_video_bytes
│   ├── ConverterMissing      converter_missing
│   ├── NotFound              not_found
│   ├── Conflict              conflict
│   ├── Unauthorized          unauthorized
│   ├── Forbidden             forbidden: a known caller, not allowed there (/metrics without its token)
│   ├── TenantLimitExceeded   tenant_limit_exceeded: too many unfinished jobs or items (HTTP 429)
│   ├── Expired               expired: the job passed its expiry time before this item finished
│   └── LeaseExpired          lease_expired: the worker holding the item stopped (killed, lost), too often
└── RetryableError            retryable_error: transient (S3, network, database); tasks retry with backoff
    ├── TransportError        transport_error: infrastructure unreachable; up to max_transport_attempts
    │   ├── StorageUnavailable    storage_unavailable
    │   ├── DatabaseUnavailable   database_unavailable
    │   └── DatabaseConflict      database_conflict: rolled back for a concurrent transaction (a deadlock)
    ├── EngineError           engine_error
    └── WriterLost            writer_lost: a result writer process died (killed, out of memory) mid-batch
"""

from __future__ import annotations

from typing import ClassVar

from jobs.status import EXPIRED_CODE


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


class PromptMediaLimit(InvalidInput):
    code = "prompt_media_limit"


class MediaError(PermanentError):
    code = "media_error"


class CorruptMedia(MediaError):
    code = "corrupt_media"


class CorruptVideo(CorruptMedia):
    code = "corrupt_video"


class EncryptedDocument(MediaError):
    code = "encrypted_document"


class EmptyDocument(MediaError):
    code = "empty_document"


class TooManyPages(MediaError):
    code = "too_many_pages"


class EmptyVideo(MediaError):
    code = "empty_video"


class VideoTooLong(MediaError):
    code = "video_too_long"


class VideoDecodeTimeout(MediaError):
    code = "video_decode_timeout"


class UnsupportedMedia(MediaError):
    code = "unsupported_media"


class PagesOutOfRange(MediaError):
    """The ``pages`` option names pages the document does not have."""

    code = "pages_out_of_range"


class ExtremeAspectRatio(MediaError):
    """Longer than 200 times its width (or the reverse): GLM-4.1V's image processor refuses it."""

    code = "extreme_aspect_ratio"


class ConversionFailed(MediaError):
    """LibreOffice ran but made no PDF of an office file."""

    code = "conversion_failed"


class ConversionTimeout(ConversionFailed):
    code = "conversion_timeout"


class UnsupportedCodec(UnsupportedMedia):
    code = "unsupported_codec"


class NoVideoStream(UnsupportedMedia):
    code = "no_video_stream"


class SourceTooLarge(MediaError):
    code = "source_too_large"


class ForbiddenUri(InvalidInput):
    code = "forbidden_uri"


class InvalidManifestLine(InvalidInput):
    """A line of a job's manifest (jobs.listings) that names no item: not JSON, no uri, an unknown field."""

    code = "invalid_manifest_line"


class ImageTooLarge(SourceTooLarge):
    """More pixels than VLMQ_MEDIA__MAX_IMAGE_PIXELS: refused from the header, before decoding."""

    code = "image_too_large"


class ConverterMissing(PermanentError):
    """The worker has no converter for this kind of file (not the file's fault, but retrying cannot help)."""

    code = "converter_missing"


class VideoTooLarge(SourceTooLarge):
    code = "video_too_large"


class NotFound(PermanentError):
    code = "not_found"


class Conflict(PermanentError):
    code = "conflict"


class Unauthorized(PermanentError):
    code = "unauthorized"


class Forbidden(PermanentError):
    """Known caller, not allowed here (e.g. /metrics without its scrape token)."""

    code = "forbidden"


class TenantLimitExceeded(PermanentError):
    code = "tenant_limit_exceeded"


class Expired(PermanentError):
    code = EXPIRED_CODE  # an item failed with it has the outcome "expired", not "failed" (jobs.status)


class LeaseExpired(PermanentError):
    code = "lease_expired"


class TransportError(RetryableError):
    code = "transport_error"


class StorageUnavailable(TransportError):
    code = "storage_unavailable"


class DatabaseUnavailable(TransportError):
    code = "database_unavailable"


class DatabaseConflict(TransportError):
    """Postgres rolled the request back for a concurrent one (a deadlock it broke, a serialization
    failure): nothing was changed, and the same request again is expected to pass."""

    code = "database_conflict"


class EngineError(RetryableError):
    code = "engine_error"


class WriterLost(RetryableError):
    code = "writer_lost"
