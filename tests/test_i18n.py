"""Simplified Chinese: every marked string of the app has a translation, and it shows."""

import re
from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import translation

from scheduling.models import ExecutionStatus, Job
from tests.factories import make_job

ROOT = Path(__file__).resolve().parents[1]
MARKED = re.compile(r"""(?<![\w.])_\(\s*"((?:[^"\\]|\\.)+)"\s*[,)]""")


def marked_strings() -> set[str]:
    found = set()
    for path in (ROOT / "scheduling").rglob("*.py"):
        if "migrations" in path.parts:
            continue
        found.update(m.encode().decode("unicode_escape") for m in MARKED.findall(path.read_text()))
    return found


def test_every_marked_string_has_a_chinese_translation():
    strings = marked_strings()
    assert len(strings) > 100
    with translation.override("zh-hans"):
        missing = sorted(
            s for s in strings if translation.gettext(s) == s and s not in {"Cron", "API"}
        )  # same in both languages
    assert missing == []


@pytest.mark.django_db
def test_admin_pages_are_in_chinese_when_the_browser_asks(admin_client):
    make_job(name="nightly", cron_expression="0 0 9 * * 1")
    page = admin_client.get(
        reverse("admin:scheduling_job_changelist"), HTTP_ACCEPT_LANGUAGE="zh-Hans"
    ).content.decode()
    assert "定时任务" in page
    assert "下次执行" in page
    assert "仅在 星期一" in page  # the cron expression in words, in Chinese too


def test_labels_translate():
    with translation.override("zh-hans"):
        assert str(Job._meta.verbose_name_plural) == "定时任务"
        assert str(ExecutionStatus.SUCCESS.label) == "成功"
    with translation.override("en"):
        assert str(ExecutionStatus.SUCCESS.label) == "Success"
