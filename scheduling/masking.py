"""Keyword arguments that hold secrets: masked wherever they are shown or exported.

A kwarg is sensitive when its name matches ``SENSITIVE_KWARGS`` (by default names
containing password, token, secret, api_key, credential, auth…). Shown values become
``MASK``; a form or an import that sends ``MASK`` back keeps the stored value, so a masked
export or form round-trips without losing the secret — as long as the job's other keyword
arguments stay the same (:func:`unmask_checked`): otherwise whoever changes where the job
points (a URL, a host) could keep a secret they never saw and send it there. Secrets never
travel through the broker or Celery's result store either: messages carry only the job id.
"""

import re
from typing import Any

from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _

from scheduling import conf

MASK = "********"


def _pattern() -> re.Pattern:
    return re.compile(conf.get("SENSITIVE_KWARGS"), re.IGNORECASE)


def is_sensitive(name: str) -> bool:
    return bool(_pattern().search(str(name)))


def mask(value: Any) -> Any:
    """A copy of ``value`` with the values of sensitive keys replaced, at any depth."""
    if isinstance(value, dict):
        return {
            k: MASK if is_sensitive(k) and v not in (None, "") else mask(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [mask(item) for item in value]
    return value


def unmask(new: Any, old: Any) -> Any:
    """``new`` with every ``MASK`` placed where ``old`` had a value put back."""
    if isinstance(new, dict) and isinstance(old, dict):
        return {
            k: (old[k] if v == MASK and k in old else unmask(v, old.get(k))) for k, v in new.items()
        }
    if isinstance(new, list) and isinstance(old, list):
        return [unmask(item, old[i]) if i < len(old) else item for i, item in enumerate(new)]
    return new


def _kept(new: Any, old: Any, path: str = "") -> list[str]:
    """Where ``new`` sends ``MASK`` back for a value ``old`` has (dotted key paths)."""
    found: list[str] = []
    if isinstance(new, dict) and isinstance(old, dict):
        for k, v in new.items():
            where = f"{path}.{k}" if path else str(k)
            if v == MASK and k in old:
                found.append(where)
            else:
                found += _kept(v, old.get(k), where)
    elif isinstance(new, list) and isinstance(old, list):
        for i, item in enumerate(new[: len(old)]):
            found += _kept(item, old[i], f"{path}[{i}]")
    return found


def unmask_checked(*, new: Any, old: Any, may_keep: bool, job: str = "") -> Any:
    """:func:`unmask`, refusing to keep a stored secret when the other keyword arguments
    change, unless ``may_keep`` (the editor's ``scheduling.keep_secrets`` permission).

    Raises ``ValidationError`` on ``kwargs`` naming the secrets to enter again.
    """
    restored = unmask(new, old)
    kept = _kept(new, old)
    if not kept or may_keep or mask(restored) == mask(old):
        return restored
    message = _(
        "%(keys)s: a stored secret is kept only while the other keyword arguments stay the "
        "same; enter the secret again to change them."
    ) % {"keys": ", ".join(kept)}
    if job:
        message = _("Job %(job)s: %(message)s") % {"job": job, "message": message}
    raise ValidationError({"kwargs": message})
