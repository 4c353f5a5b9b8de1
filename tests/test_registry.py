"""The allow-list of runnable functions."""

import pytest

from scheduling import registry


def test_registered_demo_tasks_are_listed_with_descriptions():
    names = dict(registry.choices())
    assert "demo.echo" in names
    assert "Return the arguments" in names["demo.echo"]


def test_async_functions_are_recognised():
    assert registry.get_task("demo.async_sleep").is_async
    assert not registry.get_task("demo.sleep").is_async


def test_unknown_task_is_refused_with_its_name():
    with pytest.raises(registry.UnknownTaskError, match=r"'os\.system' is not registered"):
        registry.get_task("os.system")


def test_a_name_cannot_be_registered_twice_for_different_functions():
    @registry.job_task("tests.once")
    def first():
        return 1

    with pytest.raises(ValueError, match="registered twice"):

        @registry.job_task("tests.once")
        def second():
            return 2


def test_name_and_description_default_to_module_path_and_docstring():
    @registry.job_task()
    def documented():
        """Does a documented thing.

        More text."""

    task = registry.get_task(
        f"{__name__}.test_name_and_description_default_to_module_path_and_docstring.<locals>.documented"
    )
    assert task.description == "Does a documented thing."


def test_a_celery_task_stacked_under_job_task_is_registered_and_stays_a_celery_task():
    from tests.jobs import bound_celery_task, celery_flaky

    task = registry.get_task("tests.celery_flaky")  # its Celery name, by default
    assert task.celery_task is celery_flaky and not task.is_async
    assert task.description == "A Celery task with options of its own, registered as a job task."
    assert celery_flaky.name == "tests.celery_flaky"  # still callable through Celery
    assert hasattr(celery_flaky, "delay") and hasattr(bound_celery_task, "apply_async")
    # A bound task's function gets the task as ``self``; its request is empty.
    assert registry.get_task("tests.bound_celery_task").func(3) == {
        "value": 3,
        "task": "tests.bound_celery_task",
        "called_directly": True,
    }


def test_a_celery_task_not_stacked_under_job_task_cannot_run_as_a_job():
    from scheduling.alert_tasks import deliver_alert

    assert deliver_alert.name == "scheduling.deliver_alert"
    assert not registry.is_registered("scheduling.deliver_alert")
