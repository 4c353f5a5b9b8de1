"""Dates as the admin shows the stock fields: to the second, with the UTC offset
(``+0800``) rather than an ambiguous abbreviation. The app's own pages use
:mod:`scheduling.display`."""

DATETIME_FORMAT = "Y-m-d H:i:s O"
SHORT_DATETIME_FORMAT = "Y-m-d H:i:s O"
TIME_FORMAT = "H:i:s"
DATE_FORMAT = "Y-m-d"
