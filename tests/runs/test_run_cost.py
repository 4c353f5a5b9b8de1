"""What recording a run costs, and that the cheaper recording still records everything.

A worker records every run: the execution row, the Celery task result, the daily
statistics and the alert states. The number of statements per run is held here, so that
it cannot grow back unnoticed (``benchmarks/worker_throughput.py`` measures the rate).
"""

import pytest
from django.db import connection

from project.celery import app
from scheduling import sql
from scheduling.models import Job, JobAlertStatus, JobExecution
from tests.factories import make_job, run_scheduled

# Real transactions and their commit hooks (the run events), as on a worker.
pytestmark = pytest.mark.django_db(transaction=True)

# start: lock + read the job, count running, insert if the rules let it run; finish:
# execution, task result, statistics, alert states, job; on SQLite BEGIN and COMMIT of
# each too (PostgreSQL's are implicit: sql.one_trip_transaction).
QUERIES_PER_RUN = 8 if connection.vendor == "postgresql" else 12
ROUND_TRIPS_PER_RUN = 2  # PostgreSQL: the start, and the finish


def test_a_run_costs_a_fixed_number_of_statements(django_assert_max_num_queries):
    job = make_job(task="demo.noop", alert_emails="ops@example.com")
    for _ in range(3):  # history, statistics and alert rows exist: the steady state
        run_scheduled(job)
    with django_assert_max_num_queries(QUERIES_PER_RUN):
        run_scheduled(job)
    assert JobExecution.objects.filter(job=job, status="success").count() == 4


@pytest.mark.skipif(connection.vendor != "postgresql", reason="round trips: PostgreSQL")
def test_a_run_costs_two_round_trips():
    job = make_job(task="demo.noop", alert_emails="ops@example.com")
    for _ in range(3):
        run_scheduled(job)
    with sql.round_trips() as trips:
        run_scheduled(job)
    assert trips == [ROUND_TRIPS_PER_RUN]
    execution = JobExecution.objects.filter(job=job).latest("pk")
    assert execution.status == "success" and execution.finished_at is not None
    with sql.round_trips() as trips:  # the counter counts: statements sent one by one
        for _ in range(3):
            sql.row_update(Job, job.pk, last_status="")
    assert trips == [3]


def test_the_count_does_not_grow_with_history(django_assert_max_num_queries):
    job = make_job(task="demo.noop", max_instances=1)
    for _ in range(30):
        run_scheduled(job)
    with django_assert_max_num_queries(QUERIES_PER_RUN):
        run_scheduled(job)


def test_a_healthy_run_only_reads_the_alert_states():
    job = make_job(task="demo.noop", alert_emails="ops@example.com")
    run_scheduled(job)
    assert not JobAlertStatus.objects.exists()  # nothing to change, nothing written


def test_worker_processes_keep_their_database_connection():
    from celery.fixups.django import DjangoWorkerFixup

    assert DjangoWorkerFixup(app).db_reuse_max == 1000
