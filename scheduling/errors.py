"""Users' errors told in one line: a ``ValidationError`` as commands and the JSON views
answer it, each message after the name of its field."""

from django.core.exceptions import ValidationError


def one_line(exc: ValidationError) -> str:
    """``field: message; other: message`` (the messages alone when no field is named)."""
    if hasattr(exc, "error_dict"):
        return "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in exc.message_dict.items())
    return "; ".join(exc.messages)
