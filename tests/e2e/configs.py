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

#: A test of the web server, whatever the broker: runs with Redis, not again with RabbitMQ.
NOT_ON_AMQP = pytest.mark.skipif(
    os.environ.get("CELERY_BROKER_URL", "").startswith("amqp"),
    reason="independent of the broker: runs with Redis",
)
