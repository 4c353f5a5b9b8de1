"""Plain-SQL statements and one-round-trip transactions (scheduling.sql)."""

import pytest
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.forms.models import model_to_dict
from django.utils import timezone

from scheduling import sql
from scheduling.models import Job, JobExecution
from tests.factories import make_job

pytestmark = pytest.mark.django_db(transaction=True)


def test_one_trip_transaction_is_all_or_nothing():
    job = make_job(task="demo.noop")
    other = make_job(task="demo.noop")
    with pytest.raises(IntegrityError), sql.one_trip_transaction():
        sql.row_update(Job, job.pk, last_status="failure")
        sql.row_update(Job, job.pk, name=other.name)  # the unique name: fails
        sql.row_update(Job, other.pk, last_status="failure")
    assert set(Job.objects.values_list("last_status", flat=True)) == {""}
    with sql.round_trips() as trips, sql.one_trip_transaction():
        sql.row_update(Job, job.pk, last_status="success")
        sql.row_update(Job, other.pk, last_status="success")
    assert trips == [1 if connection.vendor == "postgresql" else 0]
    assert set(Job.objects.values_list("last_status", flat=True)) == {"success"}
    with transaction.atomic():  # inside a transaction, it is part of it
        with sql.one_trip_transaction():
            sql.row_update(Job, job.pk, last_status="failure")
        transaction.set_rollback(True)
    assert Job.objects.get(pk=job.pk).last_status == "success"


def test_one_statement_rows_match_the_orm():
    job = make_job(
        task="demo.echo",
        args=[1, "a"],
        kwargs={"k": {"n": 1}},
        retry_on=["ConnectionError"],
        coalesce=True,
    )
    loaded, _ = sql.row_get_with(Job, job.pk)
    assert model_to_dict(loaded) == model_to_dict(Job.objects.get(pk=job.pk))
    assert loaded.created_at == Job.objects.get(pk=job.pk).created_at
    assert sql.row_get_with(Job, job.pk + 1000)[0] is None
    now = timezone.now()
    new = sql.row_insert(
        JobExecution(
            job=job,
            job_name=job.name,
            task=job.task,
            trigger="manual",
            status="running",
            started_at=now,
        )
    )
    assert JobExecution.objects.get(pk=new.pk).started_at == now
    assert sql.row_update(Job, job.pk, increment=["total_run_count"], last_status="failure")
    job.refresh_from_db()
    assert (job.last_status, job.total_run_count) == ("failure", 1)


def test_an_exception_in_a_one_trip_transaction_commits_nothing():
    job = make_job(task="demo.noop")
    with pytest.raises(RuntimeError), sql.one_trip_transaction():
        sql.row_update(Job, job.pk, last_status="failure")
        raise RuntimeError("e.g. a soft time limit arriving mid-way")
    assert Job.objects.get(pk=job.pk).last_status == ""
    sql.row_update(Job, job.pk, last_status="success")  # the connection goes on working
    assert Job.objects.get(pk=job.pk).last_status == "success"


def test_statements_keep_working_after_a_one_trip_transaction_failed():
    # psycopg counts a statement as prepared when it sends it; after an error the server
    # skips it, so a connection kept as it was would later run a statement never prepared.
    job = make_job(task="demo.noop")
    other = make_job(task="demo.noop")
    threshold = settings.DATABASES["default"].get("OPTIONS", {}).get("prepare_threshold") or 5
    sql.row_update(Job, job.pk, last_status="")  # psycopg counts its runs from here
    for _ in range(threshold + 1):
        with pytest.raises(IntegrityError), sql.one_trip_transaction():
            sql.row_update(Job, job.pk, name=other.name)  # fails: names are unique
            sql.row_update(Job, job.pk, last_status="")  # skipped by the server
    sql.row_update(Job, job.pk, last_status="success")  # the statement the server skipped
    assert Job.objects.get(pk=job.pk).last_status == "success"


@pytest.mark.skipif(connection.vendor != "postgresql", reason="pipelines: PostgreSQL")
def test_one_trip_transactions_do_not_nest():
    outer, inner = sql.one_trip_transaction(), sql.one_trip_transaction()
    with pytest.raises(RuntimeError, match="nested"), outer, inner:
        pass
