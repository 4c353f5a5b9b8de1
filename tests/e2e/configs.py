"""Which of the suite's configurations (``scripts/test``) runs a test that does not depend
on all of them."""

import os

import pytest

#: A test that brings its own servers, project or broker gives the same answer in every
#: configuration: it runs once, in the embedded one (no ``DATABASE_URL``).
EMBEDDED_ONLY = pytest.mark.skipif(
    bool(os.environ.get("DATABASE_URL")),
    reason="independent of the suite's database and broker: runs in the embedded configuration",
)

#: A test whose subject does not touch the broker's part (the web server, beat's own
#: bookkeeping in the database, calendars, pauses, the workers' clocks): runs with Redis,
#: not again with RabbitMQ, whose pass keeps to what a broker changes.
NOT_ON_AMQP = pytest.mark.skipif(
    os.environ.get("CELERY_BROKER_URL", "").startswith("amqp"),
    reason="independent of the broker: runs with Redis",
)
