"""Keyword arguments that hold secrets: masked wherever they are shown or exported.

A kwarg is sensitive when its name matches ``SENSITIVE_KWARGS`` (by default names
containing password, token, secret, api_key, credential, auth…). Shown values become
``MASK``; a form or an import that sends ``MASK`` back keeps the stored value, so a masked
export or form round-trips without losing the secret. Secrets never travel through the
broker or Celery's result store either: messages carry only the job id.
"""

import re
from typing import Any

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
