"""Who is changing jobs, and through what: set around a change, read by the services.

The admin, the commands and the importer wrap their calls in :func:`audit_context`;
anything else (code calling the services directly) is recorded as the ``api``.
"""

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class AuditContext:
    """Who makes the job changes of a block, and through what."""

    source: str = "api"
    actor: str = ""


_current: contextvars.ContextVar[AuditContext | None] = contextvars.ContextVar(
    "scheduling_audit", default=None
)


@contextmanager
def audit_context(*, source: str, actor: object = "") -> Iterator[AuditContext]:
    """Attribute the job changes made inside the block to ``source`` and ``actor``."""
    context = AuditContext(source=source, actor=str(actor or ""))
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)


def current() -> AuditContext:
    return _current.get() or AuditContext()
