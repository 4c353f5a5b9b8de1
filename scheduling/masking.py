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


def secret_values(kwargs: Any) -> list[str]:
    """The text of every sensitive keyword argument's value, at any depth, longest first
    (so that a secret containing another is masked whole)."""
    found: set[str] = set()

    def walk(value: Any, sensitive: bool) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, sensitive or is_sensitive(key))
        elif isinstance(value, list):
            for item in value:
                walk(item, sensitive)
        elif sensitive and value not in (None, "") and not isinstance(value, bool):
            found.add(str(value))

    walk(kwargs, False)
    return sorted(found, key=len, reverse=True)


def mask_text(text: str, secrets: list[str]) -> str:
    """``text`` (an exception's message, a traceback) with every secret replaced."""
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


def mask_exception(exc: BaseException, secrets: list[str]) -> BaseException:
    """``exc``, or when its message holds a secret an exception saying the same with the
    secret masked: of the same class where it can be made from one message, else a
    ``RuntimeError`` that names the class."""
    text = str(exc)
    masked = mask_text(text, secrets)
    if masked == text and mask_text(repr(exc.args), secrets) == repr(exc.args):
        return exc
    try:
        shown = type(exc)(masked)
    except Exception:
        shown = RuntimeError(f"{type(exc).__name__}: {masked}")
    if str(shown) != masked:
        shown = RuntimeError(f"{type(exc).__name__}: {masked}")
    return shown
