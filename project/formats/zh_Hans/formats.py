"""Chinese dates: the same as English (``project.formats.en``), to the second with the offset."""

from project.formats.en.formats import (  # noqa: F401
    DATE_FORMAT,
    DATETIME_FORMAT,
    SHORT_DATETIME_FORMAT,
    TIME_FORMAT,
)
