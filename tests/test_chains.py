"""Chains (issue 15, item 4): links saved with a cycle check, the outcome that starts each
next job, the result passed on, the command line, export/import and the admin inline.
Runs are carried out in this process as a worker does (the message sent, given to the
task), so the run-finished receiver starts the next runs as it does on a worker."""

import contextlib
import io
import json
from unittest import mock

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from scheduling import chain_services, selectors, services
from scheduling.chain_services import LinkSpec
from scheduling.config import ConfigError
from scheduling.models import ExecutionStatus, JobChange, JobExecution, JobLink
from scheduling.tasks import run_job
from tests.factories import make_job, make_record

pytestmark = pytest.mark.django_db


class Sent:
    """The messages ``run_job.apply_async`` was asked to send, and a way to run them."""

    def __init__(self) -> None:
        self.messages: list[tuple[dict, dict]] = []

    def __call__(self, kwargs=None, task_id=None, producer=None, **options):
        self.messages.append((kwargs, {**options, "task_id": task_id}))
        return mock.Mock(id=task_id)

    def run(self, index: int = -1) -> JobExecution:
        kwargs, options = self.messages[index]
        # A failing function's error is recorded on its run.
        with contextlib.suppress(Exception):
            run_job.apply(kwargs=kwargs, task_id=options["task_id"])
        runs = JobExecution.objects.filter(task_result_id=options["task_id"])
        return runs.order_by("-attempt").first()  # the last attempt

    def jobs(self) -> list[int]:
        return [kwargs["job_id"] for kwargs, _options in self.messages]


@pytest.fixture
def sent(monkeypatch):
    """Messages are captured; on-commit callbacks run at once (as if committed)."""
    messages = Sent()
    monkeypatch.setattr(run_job, "apply_async", messages)
    monkeypatch.setattr(transaction, "on_commit", lambda func, using=None, robust=False: func())
    return messages


def link(upstream, *specs: LinkSpec) -> None:
    chain_services.job_set_links(job=upstream, links=list(specs))


# --- saving links: the cycle check ------------------------------------------------------


def test_a_cycle_is_refused_naming_it_and_nothing_is_saved():
    a, b, c = (make_job(name=n) for n in "abc")
    link(a, LinkSpec("b"))
    link(b, LinkSpec("c", "failure"))
    with pytest.raises(ValidationError) as raised:
        link(c, LinkSpec("a", "always"))
    assert "a -> b -> c -> a" in str(raised.value) or "c -> a -> b -> c" in str(raised.value)
    assert not JobLink.objects.filter(upstream=c).exists()


def test_a_job_that_starts_itself_is_a_cycle():
    a = make_job(name="a")
    with pytest.raises(ValidationError, match="a -> a"):
        link(a, LinkSpec("a"))


def test_a_diamond_is_not_a_cycle_and_replacing_links_replaces_them():
    a, b, c, _d = (make_job(name=n) for n in "abcd")
    link(a, LinkSpec("b"), LinkSpec("c"))
    link(b, LinkSpec("d"))
    link(c, LinkSpec("d"))
    assert [s.job for s in chain_services.job_links(a)] == ["b", "c"]
    link(a, LinkSpec("d", "failure", "report"))
    assert chain_services.job_links(a) == [LinkSpec("d", "failure", "report")]
    change = JobChange.objects.filter(job=a).latest("pk")
    assert "then" in change.changes


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        (LinkSpec("missing"), "no job named 'missing'"),
        (LinkSpec("b", "sometimes"), "success, failure or always"),
        (LinkSpec("b", "success", "1x"), "Python name"),
    ],
)
def test_bad_links_are_refused_naming_the_problem(spec, words):
    a, _b = make_job(name="a"), make_job(name="b")
    with pytest.raises(ValidationError, match=words):
        link(a, spec)
    assert not JobLink.objects.exists()


def test_a_job_named_twice_is_refused():
    a, _b = make_job(name="a"), make_job(name="b")
    with pytest.raises(ValidationError, match="more than once"):
        link(a, LinkSpec("b"), LinkSpec("b", "failure"))


def test_link_parse_reads_name_condition_and_keyword():
    assert chain_services.link_parse("b") == LinkSpec("b", "success", "")
    assert chain_services.link_parse("b:failure:as=error") == LinkSpec("b", "failure", "error")
    assert chain_services.link_parse("b:as=x:always") == LinkSpec("b", "always", "x")
    with pytest.raises(ValidationError, match="'often'"):
        chain_services.link_parse("b:often")


# --- which outcome starts which next job ------------------------------------------------


@pytest.mark.parametrize(
    ("status", "started"),
    [
        (ExecutionStatus.SUCCESS, {"on-success", "on-always"}),
        (ExecutionStatus.FAILURE, {"on-failure", "on-always"}),
        (ExecutionStatus.TIMEOUT, {"on-failure", "on-always"}),
        (ExecutionStatus.LOST, {"on-failure", "on-always"}),
        (ExecutionStatus.CANCELLED, set()),
        (ExecutionStatus.TERMINATED, set()),
        (ExecutionStatus.SKIPPED, set()),
        (ExecutionStatus.MISSED, set()),
    ],
)
def test_the_outcome_starts_the_links_whose_condition_it_meets(sent, status, started):
    a = make_job(name="a")
    nexts = {c: make_job(name=f"on-{c}") for c in ("success", "failure", "always")}
    link(a, *(LinkSpec(job.name, c) for c, job in nexts.items()))
    run = make_record(a, status, timezone.now())
    chain_services.chain_start(execution=run)
    names = {job.name for job in nexts.values() if job.pk in sent.jobs()}
    assert names == started


def test_a_failed_attempt_that_is_retried_starts_nothing(sent):
    a, b = make_job(name="a"), make_job(name="b")
    link(a, LinkSpec("b", "failure"))
    run = make_record(a, ExecutionStatus.FAILURE, timezone.now())
    assert chain_services.chain_start(execution=run, retrying=True) == []
    assert chain_services.chain_start(execution=run) != []
    assert sent.jobs() == [b.pk]


def test_a_run_retried_to_success_starts_the_success_link_once_and_no_failure_link(sent):
    a = make_job(
        name="a",
        task="tests.flaky",
        kwargs={"key": f"chain-{timezone.now().timestamp()}", "failures": 1},
        max_retries=2,
        retry_backoff=0,
    )
    ok, bad = make_job(name="ok"), make_job(name="bad")
    link(a, LinkSpec("ok"), LinkSpec("bad", "failure"))
    services.job_run_now(job=a)
    sent.run(0)
    attempts = JobExecution.objects.filter(job=a).order_by("attempt")
    assert [r.status for r in attempts] == ["failure", "success"]
    assert sent.jobs() == [a.pk, ok.pk] and bad.pk not in sent.jobs()


def test_a_paused_next_job_is_not_started(sent):
    a, _b, c = make_job(name="a"), make_job(name="b", enabled=False), make_job(name="c")
    link(a, LinkSpec("b"), LinkSpec("c"))
    chain_services.chain_start(execution=make_record(a, ExecutionStatus.SUCCESS, timezone.now()))
    assert sent.jobs() == [c.pk]


# --- the result passed on, through real runs (the receiver starts the next) -------------


def test_a_success_starts_the_next_job_with_its_result_linked_to_its_run(sent):
    a = make_job(name="a", task="tests.record_run", kwargs={"key": "a", "value": {"n": 7}})
    b = make_job(name="b", task="tests.record_run", kwargs={"key": "b"})
    link(a, LinkSpec("b", "success", "value"))
    services.job_run_now(job=a)
    first = sent.run(0)
    assert first.status == ExecutionStatus.SUCCESS
    assert sent.jobs() == [a.pk, b.pk]  # the receiver sent B once A's record committed
    second = sent.run(1)
    assert second.status == ExecutionStatus.SUCCESS
    assert second.trigger == "chain" and second.parent_id == first.pk
    assert second.scheduled_at == first.scheduled_at  # the chain keeps the logical time
    assert second.kwargs["value"] == json.loads(first.result)
    assert second.kwargs["value"]["value"] == {"n": 7}
    assert list(first.children.all()) == [second]


def test_a_failure_starts_the_failure_link_and_not_the_success_one(sent):
    a = make_job(name="a", task="tests.value_error")
    ok = make_job(name="ok", task="tests.record_run", kwargs={"key": "ok"})
    bad = make_job(name="bad", task="tests.record_run", kwargs={"key": "bad"})
    link(a, LinkSpec("ok"), LinkSpec("bad", "failure"))
    services.job_run_now(job=a)
    first = sent.run(0)
    assert first.status == ExecutionStatus.FAILURE
    assert sent.jobs() == [a.pk, bad.pk]
    assert sent.run(1).parent_id == first.pk
    assert ok.pk not in sent.jobs()


def test_a_result_cut_short_or_not_json_is_passed_as_its_stored_text():
    run = JobExecution(result='{"rows": [1, 2, 3…')
    assert chain_services.result_value(run) == '{"rows": [1, 2, 3…'
    assert chain_services.result_value(JobExecution(result="<object at 0x1>")) == "<object at 0x1>"
    assert chain_services.result_value(JobExecution(result='{"a": 1}')) == {"a": 1}
    assert chain_services.result_value(JobExecution(result="")) is None


# --- command line -------------------------------------------------------------------------


def jobs(*args) -> str:
    out = io.StringIO()
    call_command("jobs", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_then_on_add_and_modify_and_show_json():
    make_job(name="b")
    make_job(name="c")
    jobs("add", "a", "--task", "demo.echo", "--cron", "0 0 * * * *", "--then", "b:as=report")
    shown = json.loads(jobs("show", "a", "--json"))
    assert shown["then"] == [{"job": "b", "on": "success", "as": "report"}]
    jobs("modify", "a", "--then", "b:failure", "--then", "c:always")
    assert json.loads(jobs("show", "a", "--json"))["then"] == [
        {"job": "b", "on": "failure", "as": ""},
        {"job": "c", "on": "always", "as": ""},
    ]
    jobs("modify", "a", "--then", "")
    assert json.loads(jobs("show", "a", "--json"))["then"] == []


def test_then_refuses_a_cycle_on_the_command_line():
    jobs("add", "a", "--task", "demo.echo", "--cron", "0 0 * * * *")
    jobs("add", "b", "--task", "demo.echo", "--cron", "0 0 * * * *", "--then", "a")
    with pytest.raises(CommandError, match="a -> b -> a"):
        jobs("modify", "a", "--then", "b")
    with pytest.raises(CommandError, match="'nope'"):
        jobs("modify", "a", "--then", "b:nope")


# --- export and import --------------------------------------------------------------------


def test_export_then_import_keeps_the_links_and_changes_nothing_twice():
    a, _b = make_job(name="a"), make_job(name="b")
    link(a, LinkSpec("b", "always", "upstream"))
    data = selectors.config_export()
    entry = next(e for e in data["jobs"] if e["task_id"] == "a")
    assert entry["options"]["then"] == [{"job": "b", "on": "always", "as": "upstream"}]
    JobLink.objects.all().delete()
    report = services.config_import(data=data)
    assert "a" in report.updated
    assert chain_services.job_links(a) == [LinkSpec("b", "always", "upstream")]
    again = services.config_import(data=data)
    assert "a" in again.unchanged


def test_import_that_changes_links_needs_the_change_permission():
    from django.contrib.auth.models import Permission, User
    from django.core.exceptions import PermissionDenied

    a, _b = make_job(name="a"), make_job(name="b")
    data = selectors.config_export()
    next(e for e in data["jobs"] if e["task_id"] == "a")["options"]["then"] = [{"job": "b"}]
    user = User.objects.create_user("viewer")
    user.user_permissions.add(Permission.objects.get(codename="add_job"))
    with pytest.raises(PermissionDenied, match="change_job"):
        services.config_import(data=data, user=User.objects.get(pk=user.pk))
    assert chain_services.job_links(a) == []


def test_import_refuses_a_cycle_or_an_unknown_next_job_and_writes_nothing():
    def entry(name, then):
        return {
            "task_id": name,
            "task_func": "demo.echo",
            "trigger_type": "interval",
            "trigger_args": {"minutes": 5},
            "options": {"then": then},
        }

    with pytest.raises(ConfigError, match="x -> y -> x"):
        services.config_import(data=[entry("x", [{"job": "y"}]), entry("y", [{"job": "x"}])])
    with pytest.raises(ConfigError, match="no job named 'z'"):
        services.config_import(data=[entry("x", [{"job": "z"}])])
    with pytest.raises(ConfigError, match=r"options.then\[0\]"):
        services.config_import(data=[entry("x", [{"job": "x", "when": "now"}])])
    assert not JobLink.objects.exists()
    report = services.config_import(
        data=[entry("x", [{"job": "y", "on": "failure"}]), entry("y", [])]
    )
    assert sorted(report.created) == ["x", "y"]
    assert [s.as_entry() for s in chain_services.job_links(report_job("x"))] == [
        {"job": "y", "on": "failure", "as": ""}
    ]


def report_job(name):
    from scheduling.models import Job

    return Job.objects.get(name=name)


# --- admin --------------------------------------------------------------------------------


def _form_data(job, rows):
    from tests.test_admin import form_data

    data = form_data(name=job.name, cron_expression=job.cron_expression)
    data["links_out-TOTAL_FORMS"] = str(len(rows))
    for index, (downstream, condition, as_) in enumerate(rows):
        data[f"links_out-{index}-downstream"] = downstream.pk
        data[f"links_out-{index}-condition"] = condition
        data[f"links_out-{index}-pass_result_as"] = as_
    return data


def test_admin_inline_saves_links_and_refuses_a_cycle(admin_client):
    a, b = make_job(name="a"), make_job(name="b")
    link(b, LinkSpec("a"))
    url = reverse("admin:scheduling_job_change", args=[a.pk])
    page = admin_client.get(url)
    assert page.status_code == 200 and b"Chain: jobs this job starts" in page.content
    assert b"No job starts this one." not in page.content  # b starts a
    response = admin_client.post(url, _form_data(a, [(b, "success", "")]))
    assert response.status_code == 200
    assert b"a -&gt; b -&gt; a" in response.content
    assert not JobLink.objects.filter(upstream=a).exists()
    JobLink.objects.all().delete()
    response = admin_client.post(url, _form_data(a, [(b, "failure", "result")]))
    assert response.status_code == 302, response.content.decode()[:3000]
    assert chain_services.job_links(a) == [LinkSpec("b", "failure", "result")]


def test_execution_page_shows_parent_and_children(admin_client):
    a, b = make_job(name="a"), make_job(name="b")
    parent = make_record(a, ExecutionStatus.SUCCESS, timezone.now())
    child = make_record(b, ExecutionStatus.SUCCESS, timezone.now(), trigger="chain", parent=parent)
    page = admin_client.get(reverse("admin:scheduling_jobexecution_change", args=[parent.pk]))
    assert reverse("admin:scheduling_jobexecution_change", args=[child.pk]) in page.content.decode()
    page = admin_client.get(reverse("admin:scheduling_jobexecution_change", args=[child.pk]))
    assert page.status_code == 200 and b"parent run" in page.content.lower()
