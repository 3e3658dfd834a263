from jobs.config import Settings


def with_limits(settings: Settings, **limits: int) -> Settings:
    """``settings`` with some of its ``limits`` (``VLMQ_LIMITS__*``) changed, for an app built in a test."""
    return settings.model_copy(update={"limits": settings.limits.model_copy(update=limits)})
