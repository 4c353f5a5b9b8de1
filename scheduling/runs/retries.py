"""Retries: whether a failed attempt is tried again, and after how long."""

from celery.exceptions import SoftTimeLimitExceeded
from celery.utils.time import get_exponential_backoff_interval

from scheduling.models import Job


class RetryLater(Exception):
    """Raised to the Celery task when a failed attempt should be retried after ``countdown``."""

    def __init__(self, countdown: float, cause: BaseException) -> None:
        self.countdown = countdown
        self.cause = cause
        super().__init__(f"retry in {countdown:.1f}s after {type(cause).__name__}: {cause}")


def should_retry(job: Job, exc: BaseException, attempt: int) -> bool:
    """Whether attempt ``attempt`` (0 = the first), which raised ``exc``, is retried:
    attempts remain, it did not time out, and ``exc`` is of a class named in the job's
    ``retry_on`` (any, when that is empty)."""
    if attempt >= job.max_retries or isinstance(exc, SoftTimeLimitExceeded):
        return False
    if not job.retry_on:
        return True
    names = set(job.retry_on)
    return any(
        cls.__name__ in names or f"{cls.__module__}.{cls.__qualname__}" in names
        for cls in type(exc).__mro__
    )


def retry_countdown(job: Job, attempt: int) -> float:
    """Exponential backoff from ``retry_backoff``, capped, with full jitter if enabled."""
    return float(
        get_exponential_backoff_interval(
            factor=job.retry_backoff,
            retries=attempt,
            maximum=job.retry_backoff_max,
            full_jitter=job.retry_jitter,
        )
    )
