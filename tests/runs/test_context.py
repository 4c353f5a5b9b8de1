"""The run context: how a function asks for it, and what it carries (in process)."""

import asyncio
import threading

import pytest

from scheduling import registry, runs
from scheduling.models import JobExecution
from scheduling.runs.call import call, context_parameter
from scheduling.runs.context import RunContext
from scheduling.runs.lease import check_contexts
from tests.factories import make_job, make_running


def _context(**fields) -> RunContext:
    return RunContext(
        **{"job": "j", "execution_id": 1, "scheduled_at": None, "attempt": 0, "trigger": "manual"}
        | fields
    )


def _task(func) -> registry.RegisteredTask:
    return registry.RegisteredTask(name="t", func=func, description="")


def test_a_function_asks_for_the_context_by_annotating_a_parameter():
    def keyword_only(*, run: RunContext): ...
    def optional(x, ctx: RunContext | None = None): ...
    def postponed(x, context: "RunContext"): ...
    def none(run, *args, **kwargs): ...

    assert context_parameter(_task(keyword_only)) == "run"
    assert context_parameter(_task(optional)) == "ctx"
    assert context_parameter(_task(postponed)) == "context"
    assert context_parameter(_task(none)) is None


@pytest.mark.django_db
def test_the_context_is_passed_and_current_during_the_call_only():
    job = make_job(kwargs={"x": 2})
    context = _context()

    def func(x, *, run: RunContext):
        return x, run is context, runs.current() is context

    assert call(_task(func), job, context) == (2, True, True)
    assert runs.current() is None


@pytest.mark.django_db
def test_an_async_function_gets_cancelled_error_when_its_run_is_cancelled():
    job = make_job()
    context = _context()
    seen = []

    async def func():
        try:
            threading.Timer(0.2, context.request_cancel).start()
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen.append(runs.current().cancelled())
            raise

    with pytest.raises(asyncio.CancelledError):
        call(_task(func), job, context)
    assert seen == [True]


def test_progress_is_bounded_and_checked():
    context = _context()
    context.progress(150, "x" * 600)
    assert context.take_progress() == (100.0, "x" * 500)
    assert context.take_progress() is None
    with pytest.raises(ValueError, match="must be a number"):
        context.progress("half")


def test_raise_if_cancelled():
    context = _context()
    context.raise_if_cancelled()
    context.request_cancel()
    assert context.cancelled()
    with pytest.raises(runs.RunCancelled):
        context.raise_if_cancelled()


@pytest.mark.django_db
def test_the_renewer_writes_progress_and_tells_a_cancelled_run():
    job = make_job()
    going, stopping = make_running(job), make_running(job)
    contexts = {going.pk: _context(execution_id=going.pk), stopping.pk: _context()}
    JobExecution.objects.filter(pk=stopping.pk).update(status="cancelling")
    contexts[going.pk].progress(42, "loading rows")
    check_contexts(contexts)
    going.refresh_from_db()
    assert (going.progress, going.progress_message) == (42.0, "loading rows")
    assert going.progress_text == "42% loading rows"
    assert not contexts[going.pk].cancelled() and contexts[stopping.pk].cancelled()
