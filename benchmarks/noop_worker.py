"""The plain Celery app that ``worker_throughput.py`` runs for its stock configurations.

One no-op task, ``bench.noop``, on an app configured like the project's workers (JSON,
one message prefetched per process, task events for Flower) but without any of our code,
and with the result store chosen by ``BENCH_RESULTS``:

- ``none``: no result backend at all;
- ``stock``: django-celery-results as its documentation sets it up (``django-db``, extended
  results, the STARTED state tracked). Celery's Django fixup closes the database
  connection before and after every task unless ``BENCH_DB_REUSE_MAX`` sets Celery's
  ``CELERY_DB_REUSE_MAX`` (the number of tasks a connection is kept for).

    celery -A benchmarks.noop_worker worker --concurrency 2 --pool prefork
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

RESULTS = os.environ.get("BENCH_RESULTS", "none")
if RESULTS not in {"none", "stock"}:
    raise ValueError(f"BENCH_RESULTS must be 'none' or 'stock', not {RESULTS!r}")

app = Celery("bench")
app.conf.update(
    broker_url=os.environ["CELERY_BROKER_URL"],
    broker_connection_retry_on_startup=True,
    result_backend="django-db" if RESULTS == "stock" else None,
    result_extended=True,
    task_track_started=True,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
)
if not os.environ.get("BENCH_CELERY_DEFAULTS"):
    # As the project's workers: one message per process, task events for Flower.
    app.conf.update(
        worker_prefetch_multiplier=1, worker_send_task_events=True, task_send_sent_event=True
    )
if os.environ.get("BENCH_ACKS_LATE"):
    app.conf.task_acks_late = True
if os.environ.get("BENCH_DB_REUSE_MAX"):
    # Read by celery.fixups.django under its old-style name.
    app.conf.CELERY_DB_REUSE_MAX = int(os.environ["BENCH_DB_REUSE_MAX"])


@app.task(name="bench.noop")
def noop() -> None:
    """Do nothing: what is left is the cost of delivering and recording a task."""
    return None
