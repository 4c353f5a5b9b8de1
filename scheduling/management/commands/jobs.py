"""``manage.py jobs``: every control of the jobs from the console, thin over the services.

Each action has its own ``--help`` with examples; ``--json`` prints machine-readable output.
Bad input exits with status 1 and a one-line reason.
"""

import argparse
import datetime as dt
import getpass
import json
import sys
import time
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from scheduling import (
    backfills,
    calendar_services,
    chain_services,
    errors,
    explain,
    group_services,
    masking,
    schedules,
    selectors,
    services,
)
from scheduling.audit import audit_context
from scheduling.models import (
    UNFINISHED_STATUSES,
    ApiKey,
    Backfill,
    BackfillReprocess,
    Calendar,
    Job,
    JobExecution,
    OverlapPolicy,
)

EXAMPLES = {
    "list": "  manage.py jobs list\n  manage.py jobs list --group maintenance --json",
    "show": "  manage.py jobs show daily_cleanup\n  manage.py jobs show 12 --json",
    "add": (
        "  manage.py jobs add report --task demo.echo --cron '0 */5 * * * *'\n"
        "  manage.py jobs add ping --task demo.echo --every 30 --period seconds --args '[1]'\n"
        "  manage.py jobs add once --task demo.echo --at '2026-12-31 23:59:59' "
        "--timezone Asia/Shanghai\n"
        "  manage.py jobs add later --task demo.echo --delay 60 --kwargs '{\"x\": 1}'\n"
        "  manage.py jobs add nightly --task demo.echo --cron '0 0 2 * * *' --queue reports "
        "--priority 7\n"
        "  manage.py jobs add trial --task demo.echo --every 10 --start-at '2026-12-01 09:00:00' "
        "--end-at '2026-12-31 18:00:00' --max-runs 100"
    ),
    "modify": (
        "  manage.py jobs modify report --cron '*/10 * * * * *'\n"
        "  manage.py jobs modify report --kwargs '{\"days\": 7}' --description 'Weekly view'\n"
        "  manage.py jobs modify report --queue reports --priority 9\n"
        "  manage.py jobs modify report --end-at '2027-01-01 00:00:00' --max-runs 10\n"
        "  manage.py jobs modify report --start-at '' --end-at '' --max-runs ''   # no window\n"
        "  manage.py jobs modify report --overlap buffer_one --max-instances 1\n"
        "  manage.py jobs modify extract --then load:as=rows --then alert-ops:failure   # chain"
    ),
    "pause": (
        "  manage.py jobs pause report --reason 'upstream API down, ticket OPS-42'\n"
        "  manage.py jobs pause report --reason 'maintenance' --until '2026-12-24 06:00:00'"
    ),
    "resume": "  manage.py jobs resume report",
    "remove": "  manage.py jobs remove report",
    "run": (
        "  manage.py jobs run report\n  manage.py jobs run report --wait --timeout 60 --json\n"
        "  manage.py jobs run report --overlap allow_all   # even while its runs hold every slot\n"
        "  manage.py jobs run report --kwargs '{\"days\": 30}'   # this run only, over the job's\n"
        "  manage.py jobs run report --logical-time '2026-11-30 02:00:00'   # the time it sees"
    ),
    "rerun": (
        "  manage.py jobs rerun 1234          # run 1234 again: its arguments, its scheduled time\n"
        "  manage.py jobs rerun 1234 --json"
    ),
    "backfill": (
        "  manage.py jobs backfill report --start '2026-10-20 00:00:00' --end '2026-11-01 00:00:00' "
        "--dry-run\n"
        "  manage.py jobs backfill report --start 2026-10-20T00:00:00+02:00 --end "
        "2026-11-01T00:00:00+01:00 --reprocess failed --overlap buffer_all --json\n"
        "  manage.py jobs backfill report --start '2026-10-20' --end '2026-10-27' --timezone "
        "Europe/Berlin --dry-run --json"
    ),
    "backfill-cancel": "  manage.py jobs backfill-cancel 12   # its fire times not sent yet are cancelled",
    "drop": "  manage.py jobs drop 1234 --reason 'the data came in late; not needed'",
    "history": "  manage.py jobs history report --limit 20",
    "explain": (
        "  manage.py jobs explain report\n"
        "  manage.py jobs explain report --since '2026-12-01 00:00:00' --recent 50 --json"
    ),
    "cancel": (
        "  manage.py jobs cancel 1234                  # ask run 1234 to stop\n"
        "  manage.py jobs cancel 1234 --terminate --reason 'stuck on a lock'   # kill it now"
    ),
    "export": "  manage.py jobs export jobs.json\n  manage.py jobs export > jobs.json",
    "import": (
        "  manage.py jobs import jobs.json --dry-run\n"
        "  manage.py jobs import jobs.json --prune   # also removes jobs not in the file"
    ),
    "install-defaults": "  manage.py jobs install-defaults",
    "skip-next": "  manage.py jobs skip-next report   # its next fire time does not run, once",
    "group": (
        "  manage.py jobs group list\n"
        "  manage.py jobs group pause reports --reason 'warehouse migration'\n"
        "  manage.py jobs group set reports --max-instances 2 --queue reports\n"
        "  manage.py jobs group resume reports"
    ),
    "calendar": (
        "  manage.py jobs calendar add holidays --date 2026-12-25 --range 2027-02-11..2027-02-17\n"
        "  manage.py jobs calendar add weekend --weekly SAT,SUN\n"
        "  manage.py jobs calendar add nights --weekly 'MON 00:00-06:00' --yearly 10-01\n"
        "  manage.py jobs calendar add cn-holidays --ics holidays.ics\n"
        "  manage.py jobs calendar list --json\n"
        "  manage.py jobs calendar show holidays\n"
        "  manage.py jobs calendar remove holidays\n"
        "  manage.py jobs modify report --calendar holidays --calendar weekend   # '' for none"
    ),
    "stats": (
        "  manage.py jobs stats --window day\n"
        "  manage.py jobs stats nightly --window week --json\n"
        "  manage.py jobs stats --since 2026-11-01T00:00:00+08:00 --until 2026-11-02T00:00:00+08:00"
    ),
    "slow": "  manage.py jobs slow --window week\n  manage.py jobs slow --threshold 2.5 --json",
    "alerts-check": "  manage.py jobs alerts-check   # dead man's switch, e.g. from system cron",
    "stats-rebuild": "  manage.py jobs stats-rebuild",
    "adopt-beat": (
        "  manage.py jobs adopt-beat --dry-run          # what would be adopted, and what not\n"
        "  manage.py jobs adopt-beat --disable-originals --json"
    ),
    "api-key": (
        "  manage.py jobs api-key create --name deploy --privileges read,run,pause,edit\n"
        "  manage.py jobs api-key create --name reports-ci --privileges read,run "
        "--jobs 'reports.*' --expires 90\n"
        "  manage.py jobs api-key list\n"
        "  manage.py jobs api-key revoke deploy"
    ),
}

# The permission each api-key action needs when a --user is given.
API_KEY_PERMISSIONS = {"create": "add_apikey", "revoke": "change_apikey", "list": "view_apikey"}

# Options of add and modify spelled out below, with their own help; every other option
# of Job.OPTION_FIELDS gets one generated from the model field (its name and help text).
EXPLICIT_OPTIONS = {
    "group",
    "max_instances",
    "overlap",
    "misfire_grace_time",
    "pause_after_failures",
    *Job.ROUTING_FIELDS,
}


# The permission each action needs when a --user is given.
PERMISSIONS = {
    "list": "view_job",
    "show": "view_job",
    "history": "view_job",
    "explain": "view_job",
    "export": "view_job",
    "stats": "view_job",
    "slow": "view_job",
    "add": "add_job",
    "modify": "change_job",
    # Import also needs add, change, pause or delete for the parts that create, update,
    # pause or resume, or prune (checked by the service, before anything is written).
    "import": "view_job",
    "install-defaults": "add_job",
    "pause": "pause_job",
    "resume": "pause_job",
    "remove": "delete_job",
    "run": "run_job",
    "rerun": "run_job",
    "backfill": "run_job",
    "backfill-cancel": "run_job",
    "cancel": "cancel_run",
    "drop": "run_job",
    "alerts-check": "view_job",
    "stats-rebuild": "change_job",
    # With --disable-originals also django_celery_beat.change_periodictask.
    "adopt-beat": "add_job",
    "api-key": "view_apikey",  # per api-key action: API_KEY_PERMISSIONS
    "skip-next": "pause_job",
    "group": "pause_job",  # set needs change_job too (checked in the action)
    # list and show; add needs add_calendar (change_calendar to extend one), remove
    # delete_calendar (checked in the action).
    "calendar": "view_calendar",
}
CALENDAR_PERMISSIONS = {"add": "add_calendar", "remove": "delete_calendar"}


def _json_arg(value: str, option: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise CommandError(f"{option} is not valid JSON: {exc}") from None


def _option_arg(name: str, value: Any) -> Any:
    """The value of a generated option (:data:`EXPLICIT_OPTIONS`) as the model field
    takes it: JSON, a number, true/false; '' clears a field that may be empty."""
    from django.db import models

    field = Job._meta.get_field(name)
    option = "--" + name.replace("_", "-")
    if isinstance(field, models.BooleanField) or isinstance(value, bool):
        return value
    if field.null and value.strip() == "":
        return None
    if isinstance(field, models.JSONField):
        return _json_arg(value, option)
    try:
        if isinstance(field, models.IntegerField):
            return int(value)
        if isinstance(field, models.FloatField):
            return float(value)
    except ValueError:
        kind = "a whole number" if isinstance(field, models.IntegerField) else "a number"
        raise CommandError(f"{option} {value!r} is not {kind}") from None
    return value


def _add_generated_options(parser) -> None:
    """One option per job option not spelled out (:data:`EXPLICIT_OPTIONS`), named and
    explained as on the model, so the commands set every option the admin form edits."""
    from django.db import models

    for name in Job.OPTION_FIELDS:
        if name in EXPLICIT_OPTIONS:
            continue
        field = Job._meta.get_field(name)
        flag = "--" + name.replace("_", "-")
        text = str(field.help_text or field.verbose_name).replace("%", "%%")
        if isinstance(field, models.BooleanField):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=text)
        elif isinstance(field, models.JSONField):
            parser.add_argument(flag, metavar="JSON", help=text + " (JSON)")
        else:
            parser.add_argument(flag, help=text + (" ('' to clear)" if field.null else ""))


def _moment_arg(value: str, option: str, tz_name: str) -> dt.datetime:
    """A date-time option, without an offset read in the job's timezone."""
    try:
        schedules.get_timezone(tz_name)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    try:
        return schedules.parse_moment(value, tz_name)
    except ValueError as exc:
        raise CommandError(f"{option} {exc}") from None


class Command(BaseCommand):
    """``manage.py jobs ACTION``: one sub-command per action."""

    help = (
        "Manage scheduled jobs: list, show, add, modify, pause, resume, remove, run, rerun, "
        "backfill, backfill-cancel, cancel, drop, history, export, import; and API keys "
        "(api-key)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--user",
            help="act as this Django user: the action needs that user's permission "
            "(view, add, change, delete, run or pause job, or cancel run)",
        )
        sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

        def action(name: str, help_text: str):
            p = sub.add_parser(
                name,
                help=help_text,
                description=help_text,
                epilog="examples:\n" + EXAMPLES[name],
                formatter_class=argparse.RawDescriptionHelpFormatter,
            )
            if name not in {
                "export",
                "import",
                "install-defaults",
                "list",
                "stats",
                "slow",
                "alerts-check",
                "stats-rebuild",
                "cancel",
                "drop",
                "adopt-beat",
                "rerun",
                "backfill-cancel",
                "calendar",
                "group",
            }:
                p.add_argument("job", help="job name or id")
            if name not in {"pause", "resume", "remove"}:
                p.add_argument("--json", action="store_true", help="print JSON")
            return p

        p = action("list", "List jobs with trigger, enabled, next run and last outcome.")
        p.add_argument("--group", help="only this group")
        action("show", "Show one job's status and its next 5 run times.")
        for name, text in (
            ("add", "Add a job: give a task and one trigger (--cron, --every, --at or --delay)."),
            ("modify", "Change a job's trigger, arguments or options."),
        ):
            p = action(name, text)
            if name == "add":
                p.add_argument("--task", required=True, help="registered task name")
            else:
                p.add_argument("--task", help="registered task name")
            trigger = p.add_mutually_exclusive_group(required=name == "add")
            trigger.add_argument("--cron", help="cron, 6 fields seconds first, or 5 fields")
            trigger.add_argument("--every", type=int, help="interval length (with --period)")
            trigger.add_argument("--at", help="run once at this date-time (job timezone)")
            if name == "add":
                trigger.add_argument("--delay", type=float, help="run once after N seconds")
            p.add_argument("--period", default="minutes", choices=list(schedules.INTERVAL_UNITS))
            p.add_argument("--args", dest="job_args", help="JSON list of positional arguments")
            p.add_argument("--kwargs", dest="job_kwargs", help="JSON object of keyword arguments")
            p.add_argument("--timezone", help="IANA timezone, e.g. Asia/Shanghai")
            p.add_argument("--group")
            p.add_argument("--title")
            p.add_argument("--description")
            p.add_argument("--max-instances", type=int)
            p.add_argument(
                "--overlap",
                choices=OverlapPolicy.values,
                help="what a fire time does while max instances runs are going: skip, "
                "buffer_one, buffer_all, cancel_other, terminate_other or allow_all",
            )
            p.add_argument("--misfire-grace-time", type=int)
            p.add_argument(
                "--queue",
                help="Celery queue of the runs ('' for the default queue); start a worker "
                "for it with: celery -A project worker -Q QUEUE",
            )
            p.add_argument(
                "--priority", type=int, help="0 (lowest, the default) to 9 (most urgent)"
            )
            p.add_argument("--exchange", help="RabbitMQ exchange ('' for the queue's own)")
            p.add_argument("--routing-key", help="RabbitMQ routing key ('' for the queue's)")
            p.add_argument(
                "--pause-after-failures",
                type=int,
                help="pause the job by itself after N failed runs in a row (0: never)",
            )
            p.add_argument(
                "--start-at",
                help="no run before this date-time (job timezone unless it has an offset; "
                "'' to clear): the first run is the first fire time at or after it",
            )
            p.add_argument(
                "--end-at",
                help="no run after this date-time (job timezone unless it has an offset; '' to "
                "clear); then the job is finished (disabled)",
            )
            p.add_argument(
                "--max-runs",
                help="most fire times the schedule sends ('' to clear); then the job is "
                "finished (disabled)",
            )
            _add_generated_options(p)
            p.add_argument(
                "--calendar",
                action="append",
                dest="calendars",
                help="exclusion calendar (repeat for several; '' for none): its dates, in the "
                "job's timezone, do not run",
            )
            p.add_argument(
                "--then",
                action="append",
                metavar="NAME[:success|failure|always][:as=KWARG]",
                help="chain: a finished run of this job starts job NAME (default on success; "
                "as=KWARG passes its result as that keyword argument). Repeat for several; "
                "replaces the job's links; '' for none",
            )
            if name == "add":
                p.add_argument("--paused", action="store_true", help="create it paused")
        p = action("pause", "Pause a job: it keeps its definition but does not fire.")
        p.add_argument("--reason", default="", help="why (shown in the jobs list and audit)")
        p.add_argument(
            "--until",
            help="resume by itself at this date-time (job timezone unless an offset is given)",
        )
        action("resume", "Resume a paused job from its next fire time.")
        action("remove", "Remove a job; its executions stay on record.")
        p = action("run", "Run a job now, once (a manual run).")
        p.add_argument("--wait", action="store_true", help="wait for the outcome")
        p.add_argument("--timeout", type=float, default=60, help="seconds to wait (default 60)")
        p.add_argument(
            "--overlap",
            choices=OverlapPolicy.values,
            help="this run's overlap policy instead of the job's (e.g. allow_all)",
        )
        p.add_argument(
            "--kwargs",
            dest="run_kwargs",
            help="JSON object of keyword arguments for this run only, over the job's",
        )
        p.add_argument(
            "--logical-time",
            help="the scheduled time the run sees (job timezone unless it has an offset; "
            "default now)",
        )
        p = action(
            "rerun",
            "Run a past run again: a new run (trigger rerun) with its arguments and its "
            "scheduled time as logical time.",
        )
        p.add_argument("execution", help="the run's execution id (jobs history lists them)")
        p = action(
            "backfill",
            "Run a job for the fire times of a past range, throttled (SCHEDULING_BACKFILL_RATE "
            "a second), below its priority, within its overlap policy.",
        )
        p.add_argument("--start", required=True, help="first fire time (inclusive)")
        p.add_argument("--end", required=True, help="end of the range (exclusive)")
        p.add_argument(
            "--timezone", help="of --start and --end without an offset (default: the job's)"
        )
        p.add_argument(
            "--reprocess",
            default="missing",
            choices=BackfillReprocess.values,
            help="missing: fire times that never ran (default); failed: also failed ones; "
            "all: every fire time",
        )
        p.add_argument(
            "--overlap",
            choices=OverlapPolicy.values,
            help="the backfill's overlap policy instead of the job's",
        )
        p.add_argument("--dry-run", action="store_true", help="list the fire times, write nothing")
        p = action("backfill-cancel", "Cancel a backfill: its fire times not sent are cancelled.")
        p.add_argument("backfill", help="the backfill's id (printed by jobs backfill)")
        p = action("drop", "Drop a run that waits for a free slot: it is skipped, never run.")
        p.add_argument("execution", type=int, help="execution id (jobs history, the admin)")
        p.add_argument("--reason", default="", help="why, recorded with who dropped it")
        p = action(
            "cancel",
            "Stop a run in progress: cancel it (its function is told, and is terminated if "
            "it has not stopped within SCHEDULING_CANCEL_GRACE_SECONDS) or terminate it now.",
        )
        p.add_argument("execution", help="the run's execution id (jobs history lists them)")
        p.add_argument("--terminate", action="store_true", help="kill the run's process now")
        p.add_argument("--reason", default="", help="why, kept with the run")
        p = action("history", "Recent executions of a job.")
        p.add_argument("--limit", type=int, default=10)
        p = action(
            "explain",
            "Why did (or didn't) it run? Each recent and upcoming fire time with its fate.",
        )
        p.add_argument("--recent", type=int, default=20, help="recent fire times (default 20)")
        p.add_argument("--upcoming", type=int, default=5, help="upcoming fire times (default 5)")
        p.add_argument(
            "--since",
            help="from this date-time (job timezone unless an offset is given; default: a day ago)",
        )
        p = action("export", "Export all job definitions as JSON (to a file or stdout).")
        p.add_argument("file", nargs="?", help="output file (default: stdout)")
        p.add_argument(
            "--include-secrets",
            action="store_true",
            help="write sensitive keyword arguments in clear (masked by default; with --user "
            "it needs the permission scheduling.export_secrets)",
        )
        importing = action("import", "Import job definitions from a JSON file, all or nothing.")
        importing.add_argument("file", help="JSON file ('-' for stdin)")
        importing.add_argument("--prune", action="store_true", help="remove jobs not in the file")
        action("install-defaults", "Install the default maintenance jobs that are missing.")
        action("skip-next", "Skip the job's next run, once: it is recorded as skipped.")
        p = action(
            "group",
            "Job groups as a whole: list them, pause every job of one, resume the jobs its "
            "pause paused, set its cap on runs at once and its jobs' default queue and alert "
            "recipients.",
        )
        p.add_argument("op", choices=["list", "pause", "resume", "set"])
        p.add_argument("name", nargs="?", help="group name (the jobs' --group)")
        p.add_argument("--reason", default="", help="why (kept on the group and its jobs)")
        p.add_argument(
            "--max-instances",
            dest="group_max_instances",
            metavar="N",
            help="set: most runs of the group's jobs at once, across all workers ('' for no "
            "cap); a run that finds it full follows its job's overlap policy",
        )
        p.add_argument(
            "--queue",
            dest="group_queue",
            help="set: Celery queue of the group's jobs with none of their own ('' to clear)",
        )
        p.add_argument(
            "--alert-emails",
            dest="group_alert_emails",
            help="set: alert e-mails of the group's jobs with no alert recipients of their "
            "own, comma-separated ('' to clear)",
        )
        p.add_argument(
            "--alert-webhooks",
            dest="group_alert_webhooks",
            help="set: alert webhook URLs of the group's jobs with no alert recipients of "
            "their own, comma-separated ('' to clear)",
        )
        p = action(
            "calendar",
            "Exclusion calendars: add (creates one, or adds to it), list, show, remove. Dates "
            "are read in the timezone of each job that uses the calendar.",
        )
        p.add_argument("op", choices=["add", "list", "show", "remove"])
        p.add_argument("name", nargs="?", help="calendar name")
        p.add_argument("--date", action="append", default=[], help="YYYY-MM-DD (repeatable)")
        p.add_argument("--range", action="append", default=[], help="A..B, both included")
        p.add_argument(
            "--weekly", action="append", default=[], help="DAYS [HH:MM-HH:MM], e.g. SAT,SUN"
        )
        p.add_argument("--yearly", action="append", default=[], help="MM-DD, every year")
        p.add_argument("--ics", help="iCalendar (.ics) file of holidays")
        p.add_argument("--description")
        for name, text in (
            ("stats", "Run statistics per job: runs, success rate, min/avg/max, p50/p95/p99."),
            ("slow", "Jobs whose average duration is over their threshold, slowest first."),
        ):
            p = action(name, text)
            if name == "stats":
                p.add_argument("job", nargs="?", help="only this job (name or id)")
            else:
                p.add_argument("--threshold", type=float, help="seconds (default: per job)")
            p.add_argument("--window", default="day", choices=["hour", "day", "week", "month"])
            p.add_argument("--since", help="ISO date-time (custom window)")
            p.add_argument("--until", help="ISO date-time (custom window)")
        action("alerts-check", "Check every job's dead man's switch now and alert if overdue.")
        action("stats-rebuild", "Rebuild the daily statistics from the execution records.")
        p = action(
            "adopt-beat",
            "Create jobs from django-celery-beat's periodic tasks (crontab, interval, clocked); "
            "list those that cannot be adopted, and why.",
        )
        for parser in (importing, p):
            parser.add_argument(
                "--dry-run", action="store_true", help="print the changes, write nothing"
            )
        p.add_argument(
            "--disable-originals",
            action="store_true",
            help="disable the adopted periodic tasks in the same transaction, so "
            "django-celery-beat no longer fires them",
        )
        p = sub.add_parser(
            "api-key",
            help="Create, list or revoke REST API keys.",
            description="Create, list or revoke REST API keys (Authorization: Bearer <key>).",
            epilog="examples:\n" + EXAMPLES["api-key"],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        keys = p.add_subparsers(dest="key_action", required=True, metavar="KEY_ACTION")
        create = keys.add_parser("create", help="create a key; prints it once, on the last line")
        create.add_argument("--name", required=True, help="who uses it; the audit trail names it")
        create.add_argument(
            "--privileges",
            required=True,
            help="comma-separated: read, run (also re-runs, backfills, cancels), pause, edit",
        )
        create.add_argument("--jobs", default="*", help="glob of the job names it reaches")
        create.add_argument("--expires", type=float, metavar="DAYS", help="expires after DAYS")
        create.add_argument("--json", action="store_true", help="print JSON")
        revoke = keys.add_parser("revoke", help="revoke a key (refused from now on)")
        revoke.add_argument("name", help="the key's name")
        listing = keys.add_parser("list", help="every key, without the keys themselves")
        listing.add_argument("--json", action="store_true", help="print JSON")

    def handle(self, *args, action: str, **options):
        self.as_json = options.get("json", False)
        handler = getattr(self, "do_" + action.replace("-", "_"))
        actor = getpass.getuser()
        self.user = None
        if options.get("user"):
            codename = API_KEY_PERMISSIONS[options["key_action"]] if action == "api-key" else None
            self.user = self._check_permission(options["user"], action, codename)
            actor = self.user.get_username()
            if action == "export" and options.get("include_secrets"):
                self._check_permission(options["user"], action, "export_secrets")
        try:
            with audit_context(source="command", actor=actor):
                handler(**options)
        except ValidationError as exc:
            raise CommandError(errors.one_line(exc)) from None
        except PermissionDenied as exc:
            raise CommandError(str(exc)) from None
        except Job.DoesNotExist as exc:
            raise CommandError(str(exc)) from None

    def _check_permission(self, username: str, action: str, codename: str | None = None):
        """The active user ``username``, if they hold the permission for ``action`` (or
        ``codename``)."""
        from django.contrib.auth import get_user_model

        user = get_user_model().objects.filter(username=username, is_active=True).first()
        if user is None:
            raise CommandError(f"No active user {username!r}.")
        permission = f"scheduling.{codename or PERMISSIONS[action]}"
        if not user.has_perm(permission):
            raise CommandError(
                f"User {username!r} lacks the permission {permission!r} for {action!r}."
            )
        return user

    # --- output ------------------------------------------------------------------------------
    def emit(self, data: Any, text: str) -> None:
        if self.as_json:
            self.stdout.write(json.dumps(data, ensure_ascii=False, indent=2, default=str))
        else:
            self.stdout.write(text)

    def _emit_table(self, rows: list[dict], header: str, line: Any) -> None:
        """``rows`` as JSON, or as a text table: ``header``, then ``line(row)`` for each."""
        self.emit(rows, "\n".join([header, *(line(row) for row in rows)]))

    def _job(self, ident: str) -> Job:
        return selectors.job_get(ident=ident)

    # --- actions -----------------------------------------------------------------------------
    def do_list(self, group: str | None = None, **_):
        rows = selectors.job_status_list(group=group)
        lines = [f"{'ID':>4}  {'NAME':<32} {'ON':<3} {'NEXT RUN':<25} {'LAST':<8} TRIGGER"]
        for row in rows:
            lines.append(
                f"{row['id']:>4}  {row['name'][:32]:<32} {'yes' if row['enabled'] else 'no':<3} "
                f"{(row['next_run_time'] or '-')[:25]:<25} {row['last_status'] or '-':<8} "
                f"{row['trigger_description']}"
            )
        self.emit(rows, "\n".join(lines))

    def do_show(self, job: str, **_):
        found = self._job(job)
        status = selectors.job_status(job=found)
        status["upcoming"] = [t.isoformat() for t in selectors.job_upcoming_runs(job=found)]
        status["calendars"] = sorted(found.calendars.values_list("name", flat=True))
        status["excluded"] = calendar_services.job_excluded_upcoming(job=found)
        status["skip_at"] = found.skip_at.isoformat() if found.skip_at else None
        status["then"] = [spec.as_entry() for spec in chain_services.job_links(found)]
        status["waiting"] = [
            self._execution(run) for run in selectors.execution_waiting_list(job=found)
        ]
        text = "\n".join(f"{key}: {value}" for key, value in status.items())
        self.emit(status, text)

    def _trigger_fields(self, options: dict[str, Any], tz_name: str) -> dict[str, Any]:
        if options.get("cron"):
            return {"trigger_type": "cron", "cron_expression": options["cron"]}
        if options.get("every") is not None:
            return {
                "trigger_type": "interval",
                "interval_every": options["every"],
                "interval_period": options["period"],
            }
        if options.get("at"):
            return {"trigger_type": "date", "run_at": _moment_arg(options["at"], "--at", tz_name)}
        return {}

    @staticmethod
    def _window_fields(options: dict[str, Any], tz_name: str) -> dict[str, Any]:
        """``--start-at``, ``--end-at`` and ``--max-runs``; an empty value clears each."""
        fields: dict[str, Any] = {}
        for name in ("start_at", "end_at"):
            value = options.get(name)
            if value is not None:
                option = "--" + name.replace("_", "-")
                fields[name] = _moment_arg(value, option, tz_name) if value.strip() else None
        value = options.get("max_runs")
        if value is not None:
            try:
                fields["max_runs"] = int(value) if value.strip() else None
            except ValueError:
                raise CommandError(
                    f"--max-runs {value!r} is not a whole number ('' for no limit)"
                ) from None
        return fields

    def _common_fields(self, options: dict[str, Any]) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        if options.get("job_args") is not None:
            fields["args"] = _json_arg(options["job_args"], "--args")
        if options.get("job_kwargs") is not None:
            fields["kwargs"] = _json_arg(options["job_kwargs"], "--kwargs")
        for option in (
            "task",
            "timezone",
            "group",
            "title",
            "description",
            "max_instances",
            "overlap",
            "misfire_grace_time",
            *Job.ROUTING_FIELDS,
        ):
            if options.get(option) is not None:
                fields[option] = options[option]
        if options.get("pause_after_failures") is not None:
            fields["pause_after_failures"] = options["pause_after_failures"] or None
        for name in set(Job.OPTION_FIELDS) - EXPLICIT_OPTIONS:
            if options.get(name) is not None:
                fields[name] = _option_arg(name, options[name])
        return fields

    @transaction.atomic
    def do_add(self, job: str, **options):
        fields = self._common_fields(options)
        task = fields.pop("task")
        if options.get("paused"):
            fields["enabled"] = False
        tz_name = fields.get("timezone") or Job().timezone
        fields.update(self._window_fields(options, tz_name))
        if options.get("delay") is not None:
            created = services.job_schedule_delay(
                task=task, delay_seconds=options["delay"], name=job, **fields
            )
        else:
            created = services.job_create(
                name=job, task=task, **self._trigger_fields(options, tz_name), **fields
            )
        if options.get("calendars"):
            calendar_services.job_set_calendars(job=created, names=options["calendars"])
        if options.get("then"):
            chain_services.job_set_links(job=created, links=_links_arg(options["then"]))
        status = selectors.job_status(job=created)
        self.emit(
            status,
            f"Added job {created.name} (id {created.pk}); next run "
            f"{status['next_run_time'] or '-'}",
        )

    def do_modify(self, job: str, **options):
        found = self._job(job)
        fields = self._common_fields(options)
        tz_name = fields.get("timezone") or found.timezone
        fields.update(self._trigger_fields(options, tz_name))
        fields.update(self._window_fields(options, tz_name))
        if not fields and options.get("calendars") is None and options.get("then") is None:
            raise CommandError("nothing to change: give a trigger, --args, --kwargs or an option")
        with transaction.atomic():
            if fields:
                services.job_update(job=found, **fields)
            if options.get("calendars") is not None:
                calendar_services.job_set_calendars(job=found, names=options["calendars"])
            if options.get("then") is not None:
                chain_services.job_set_links(job=found, links=_links_arg(options["then"]))
        status = selectors.job_status(job=found)
        self.emit(status, f"Modified job {found.name}; next run {status['next_run_time'] or '-'}")

    def do_pause(self, job: str, reason: str = "", until: str | None = None, **_):
        found = self._job(job)
        resume_at = None if until is None else _moment_arg(until, "--until", found.timezone)
        found = services.job_pause(job=found, reason=reason, until=resume_at)
        self.stdout.write(
            f"Paused job {found.name}"
            + (
                f" until {found.resume_at.astimezone(schedules.get_timezone(found.timezone)).isoformat()}"
                if found.resume_at
                else ""
            )
        )

    def do_skip_next(self, job: str, **_):
        found = self._job(job)
        skipped = calendar_services.job_skip_next(job=found)
        tz = schedules.get_timezone(found.timezone)
        data = {
            "job": found.name,
            "skipped": skipped.astimezone(tz).isoformat(),
            "next_run_time": found.next_run_at.astimezone(tz).isoformat()
            if found.next_run_at
            else None,
        }
        self.emit(
            data,
            f"Skipping the run of {found.name} at {data['skipped']}; next run {data['next_run_time'] or '-'}",
        )

    def do_group(self, op: str, name: str | None = None, reason: str = "", **options):
        if op == "list":
            self._emit_table(
                selectors.group_list(),
                f"{'GROUP':<24} {'JOBS':>4} {'ON':>4} {'MAX':>4}  PAUSED",
                lambda row: (
                    f"{row['name'][:24]:<24} {row['jobs']:>4} {row['enabled']:>4} "
                    f"{row['max_instances'] or '-':>4}  {row['paused'] or '-'}"
                ),
            )
            return
        if not name:
            raise CommandError(f"group {op}: give the group's name")
        if op == "set":
            if self.user is not None:
                self._check_permission(self.user.get_username(), "group set", "change_job")
            self._group_set(name, options)
            return
        if op == "pause":
            jobs = group_services.group_pause(name=name, reason=reason)
            words = "Paused group"
        else:
            jobs = group_services.group_resume(name=name)
            words = "Resumed group"
        names = [job.name for job in jobs]
        self.emit(
            {"group": name, "jobs": names},
            f"{words} {name}: {len(names)} job(s){': ' + ', '.join(names) if names else ''}",
        )

    def _group_set(self, name: str, options: dict[str, Any]) -> None:
        fields: dict[str, Any] = {}
        for field in sorted(group_services.GROUP_FIELDS):
            value = options.get(f"group_{field}")
            if value is not None:
                fields[field] = value.strip()
        if not fields:
            raise CommandError(
                "group set: give --max-instances, --queue, --alert-emails or --alert-webhooks"
            )
        cap = fields.get("max_instances")
        if cap is not None:
            try:
                fields["max_instances"] = int(cap) if cap else None
            except ValueError:
                raise CommandError(f"--max-instances {cap!r} is not a whole number") from None
        group = group_services.group_update(name=name, **fields)
        row = next(row for row in selectors.group_list() if row["name"] == group.name)
        self.emit(row, f"Group {group.name}: " + ", ".join(f"{k} {v!r}" for k, v in fields.items()))

    def do_calendar(self, op: str, name: str | None = None, **options):
        if self.user is not None and op in CALENDAR_PERMISSIONS:
            self._check_permission(self.user.get_username(), "calendar", CALENDAR_PERMISSIONS[op])
        if op == "list":
            rows = [
                {
                    "name": calendar.name,
                    "description": calendar.description,
                    "rules": calendar.rules.count(),
                    "jobs": sorted(calendar.jobs.values_list("name", flat=True)),
                }
                for calendar in Calendar.objects.all()
            ]
            self._emit_table(
                rows,
                f"{'NAME':<24} {'RULES':>5}  JOBS",
                lambda row: (
                    f"{row['name'][:24]:<24} {row['rules']:>5}  {', '.join(row['jobs']) or '-'}"
                ),
            )
            return
        if not name:
            raise CommandError(f"calendar {op}: give the calendar's name")
        if op == "add":
            ics = None
            if options.get("ics"):
                try:
                    with open(options["ics"], "rb") as handle:
                        ics = handle.read()
                except OSError as exc:
                    raise CommandError(f"--ics {options['ics']}: {exc.strerror}") from None
            rules = calendar_services.rules_parse(
                dates=options["date"],
                ranges=options["range"],
                weekly=options["weekly"],
                yearly=options["yearly"],
                ics=ics,
            )
            if not rules and options.get("description") is None:
                raise CommandError(
                    "calendar add: give what it excludes (--date, --range, --weekly, --yearly "
                    "or --ics)"
                )
            calendar = calendar_services.calendar_add(
                name=name, description=options.get("description"), rules=rules
            )
            self.emit(
                {"name": calendar.name, "added": len(rules)},
                f"Calendar {calendar.name}: added {len(rules)} exclusion(s)",
            )
            return
        calendar = Calendar.objects.filter(name=name).first()
        if calendar is None:
            raise CommandError(f"No calendar named {name!r}.")
        if op == "remove":
            calendar_services.calendar_remove(calendar=calendar)
            self.stdout.write(f"Removed calendar {name}")
            return
        data = {
            "name": calendar.name,
            "description": calendar.description,
            "rules": [rule.as_rule().describe() for rule in calendar.rules.all()],
            "jobs": sorted(calendar.jobs.values_list("name", flat=True)),
        }
        self.emit(
            data,
            "\n".join(
                [f"calendar: {calendar.name}", f"jobs: {', '.join(data['jobs']) or '-'}"]
                + [f"  {rule}" for rule in data["rules"]]
            ),
        )

    def do_resume(self, job: str, **_):
        found = services.job_resume(job=self._job(job))
        self.stdout.write(f"Resumed job {found.name}; next run {found.next_run_at or '-'}")

    def do_explain(
        self, job: str, recent: int = 20, upcoming: int = 5, since: str | None = None, **_
    ):
        found = self._job(job)
        start = None if since is None else _moment_arg(since, "--since", found.timezone)
        if recent < 1 or upcoming < 0:
            raise CommandError("--recent must be at least 1 and --upcoming at least 0")
        report = explain.job_explain(job=found, recent=recent, upcoming=upcoming, since=start)
        lines = [f"Job {found.name}" + (f" ({report['paused']})" if report["paused"] else "")]
        for title, key in (("recent", "recent"), ("upcoming", "upcoming")):
            lines.append(f"{title}:")
            for fate in report[key] or [{"scheduled_at": "-", "fate": "none", "detail": ""}]:
                status = f" {fate['status']}" if fate.get("status") else ""
                detail = f"  {fate['detail']}" if fate["detail"] else ""
                lines.append(f"  {fate['scheduled_at']:<26} {fate['fate']}{status}{detail}")
        self.emit(report, "\n".join(lines))

    def do_remove(self, job: str, **_):
        found = self._job(job)
        services.job_remove(job=found)
        self.stdout.write(f"Removed job {found.name}")

    def do_run(
        self,
        job: str,
        wait: bool = False,
        timeout: float = 60,
        overlap: str | None = None,
        run_kwargs: str | None = None,
        logical_time: str | None = None,
        **_,
    ):
        found = self._job(job)
        task_id = services.job_run_now(
            job=found,
            overlap=overlap,
            kwargs=None if run_kwargs is None else _json_arg(run_kwargs, "--kwargs"),
            logical_at=None
            if logical_time is None
            else _moment_arg(logical_time, "--logical-time", found.timezone),
            user=self.user,
        )
        if not wait:
            self.emit({"task_id": task_id}, f"Sent a run of {found.name} (task {task_id})")
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = (
                JobExecution.objects.filter(task_result_id=task_id)
                .exclude(status__in=UNFINISHED_STATUSES)
                .first()
            )
            if run is not None:
                data = self._execution(run)
                self.emit(
                    data,
                    f"{found.name}: {run.status}"
                    + (f" in {run.duration:.3f}s" if run.duration is not None else "")
                    + (f" on {run.worker}" if run.worker else "")
                    + (f" ({run.reason})" if run.reason and run.status != "success" else "")
                    + (f"\n{run.exception}" if run.exception else f"\nresult: {run.result}"),
                )
                if run.status != "success":
                    sys.exit(1)
                return
            time.sleep(0.2)
        raise CommandError(
            f"no outcome for {found.name} within {timeout:g}s (task {task_id}); "
            "is a worker running?"
        )

    def do_cancel(self, execution: str, terminate: bool = False, reason: str = "", **_):
        run = (
            JobExecution.objects.filter(pk=int(execution)).first() if execution.isdigit() else None
        )
        if run is None:
            raise CommandError(f"No run with execution id {execution!r} (see jobs history).")
        stopped = services.execution_cancel(
            execution=run, terminate=terminate, by=self.user, reason=reason
        )
        self.emit(
            self._execution(stopped),
            f"Run {stopped.pk} of {stopped.job_name}: {stopped.status} ({stopped.reason})",
        )

    def do_rerun(self, execution: str, **_):
        run = (
            JobExecution.objects.filter(pk=int(execution)).first() if execution.isdigit() else None
        )
        if run is None:
            raise CommandError(f"No run with execution id {execution!r} (see jobs history).")
        task_id = services.execution_rerun(execution=run, by=self.user)
        self.emit(
            {"task_id": task_id, "parent": run.pk, "job": run.job_name},
            f"Sent a re-run of run {run.pk} of {run.job_name} (task {task_id})",
        )

    def do_backfill(
        self,
        job: str,
        start: str,
        end: str,
        timezone: str | None = None,
        reprocess: str = "missing",
        overlap: str | None = None,
        dry_run: bool = False,
        **_,
    ):
        found = self._job(job)
        tz_name = timezone or found.timezone
        backfill = services.job_backfill(
            job=found,
            start=_moment_arg(start, "--start", tz_name),
            end=_moment_arg(end, "--end", tz_name),
            reprocess=reprocess,
            overlap=overlap,
            dry_run=dry_run,
            by=self.user,
            tz_name=tz_name,
        )
        data = backfills.plan_json(backfill, tz_name)
        counts = data["counts"]
        lines = [
            ("Would backfill" if dry_run else f"Backfill {backfill.pk} of")
            + f" {found.name}: {counts['total']} fire times, "
            f"{counts['total'] - counts['not_sent_on_record']} to send"
        ]
        if dry_run:
            lines += [
                f"  {run['scheduled_at']}  {'send' if run['send'] else 'leave'}"
                f"  {run['existing'] or '-'}  {run['reason']}".rstrip()
                for run in data["runs"]
            ]
        if not dry_run:
            data.pop("runs", None)
        self.emit(data, "\n".join(lines))

    def do_backfill_cancel(self, backfill: str, **_):
        found = Backfill.objects.filter(pk=int(backfill)).first() if backfill.isdigit() else None
        if found is None:
            raise CommandError(f"No backfill with id {backfill!r}.")
        cancelled = services.backfill_cancel(backfill=found, by=self.user)
        self.emit(
            backfills.plan_json(cancelled, cancelled.timezone),
            f"Backfill {cancelled.pk} of {cancelled.job_name}: cancelled "
            f"{cancelled.cancelled_count} fire times not sent yet",
        )

    def do_drop(self, execution: int, reason: str = "", **_):
        found = JobExecution.objects.filter(pk=execution).first()
        if found is None:
            raise CommandError(f"No execution {execution}.")
        actor = self.user.get_username() if self.user else getpass.getuser()
        dropped = services.execution_drop(execution=found, by=actor, reason=reason)
        self.emit(self._execution(dropped), f"Dropped run {dropped.pk} of {dropped.job_name}")

    @staticmethod
    def _execution(run: JobExecution) -> dict[str, Any]:
        return {
            "id": run.pk,
            "job": run.job_name,
            "trigger": run.trigger,
            "status": run.status,
            "scheduled_at": run.scheduled_at,
            "started_at": run.started_at,
            "finished_at": run.finished_at,
            "duration": run.duration,
            "result": run.result,
            "exception": run.exception,
            "worker": run.worker,
            "task_id": run.task_result_id,
            "reason": run.reason,
            "cancelled_by": run.cancelled_by,
            "progress": run.progress,
            "progress_message": run.progress_message,
            "waiting_since": run.waiting_since,
            "parent": run.parent_id,
            "backfill": run.backfill_id,
            "kwargs": None if run.kwargs is None else masking.mask(run.kwargs),
        }

    def do_history(self, job: str, limit: int = 10, **_):
        found = self._job(job)
        runs = list(selectors.execution_list(job=found)[:limit])
        lines = [f"{'ID':>8} {'STARTED':<26} {'TRIGGER':<9} {'OUTCOME':<10} {'SECONDS':>8}  WORKER"]
        for run in runs:
            duration = f"{run.duration:.3f}" if run.duration is not None else "-"
            lines.append(
                f"{run.pk:>8} {timezone.localtime(run.started_at).isoformat()[:26]:<26} "
                f"{run.trigger:<9} {run.status:<10} {duration:>8}  {run.worker}"
            )
        self.emit([self._execution(run) for run in runs], "\n".join(lines))

    def do_export(self, file: str | None = None, include_secrets: bool = False, **_):
        document = selectors.config_export(include_secrets=include_secrets)
        text = json.dumps(document, ensure_ascii=False, indent=2) + "\n"
        if file:
            with open(file, "w", encoding="utf-8") as handle:
                handle.write(text)
            self.stderr.write(f"Exported {Job.objects.count()} jobs to {file}")
        else:
            self.stdout.write(text, ending="")

    def do_import(self, file: str, dry_run: bool = False, prune: bool = False, **_):
        try:
            if file == "-":
                data = json.load(sys.stdin)
            else:
                with open(file, encoding="utf-8") as handle:
                    data = json.load(handle)
        except OSError as exc:
            raise CommandError(f"cannot read {file}: {exc.strerror}") from None
        except json.JSONDecodeError as exc:
            raise CommandError(f"{file} is not valid JSON: {exc}") from None
        report = services.config_import(data=data, dry_run=dry_run, prune=prune, user=self.user)
        summary = (
            f"{'Would create' if dry_run else 'Created'} {len(report.created)}, "
            f"{'update' if dry_run else 'updated'} {len(report.updated)}, "
            f"unchanged {len(report.unchanged)}, "
            f"{'remove' if dry_run else 'removed'} {len(report.removed)}"
        )
        self.emit(report.as_dict(), "\n".join([*report.diff, summary]))

    def _window(self, options: dict[str, Any]):
        try:
            return selectors.window_bounds(
                window=options["window"],
                since=selectors.window_moment_parse(name="since", value=options.get("since")),
                until=selectors.window_moment_parse(name="until", value=options.get("until")),
            )
        except ValidationError as exc:
            raise CommandError(errors.one_line(exc)) from None

    def do_stats(self, job: str | None = None, **options):
        since, until = self._window(options)
        jobs = [self._job(job)] if job else list(Job.objects.order_by("name"))
        rows = [selectors.job_statistics(job=j, since=since, until=until) for j in jobs]

        def num(value, digits=3):
            return "-" if value is None else f"{value:.{digits}f}"

        lines = [
            f"{'JOB':<30} {'RUNS':>6} {'OK%':>6} {'MIN':>8} {'AVG':>8} {'MAX':>8} "
            f"{'P50':>8} {'P95':>8} {'P99':>8}  LAST"
        ]
        for row in rows:
            rate = "-" if row["success_rate"] is None else f"{100 * row['success_rate']:.1f}"
            lines.append(
                f"{row['job'][:30]:<30} {row['runs']:>6} {rate:>6} {num(row['min']):>8} "
                f"{num(row['avg']):>8} {num(row['max']):>8} {num(row['p50']):>8} "
                f"{num(row['p95']):>8} {num(row['p99']):>8}  {row['last_status'] or '-'}"
            )
        self.emit(rows, "\n".join(lines))

    def do_slow(self, threshold: float | None = None, **options):
        since, until = self._window(options)
        rows = selectors.slow_jobs(since=since, until=until, threshold=threshold)
        lines = [f"{'JOB':<30} {'AVG':>9} {'MAX':>9} {'RUNS':>6} {'THRESHOLD':>9}"]
        lines += [
            f"{r['job'][:30]:<30} {r['avg']:>9.3f} {r['max']:>9.3f} {r['runs']:>6} {r['threshold']:>9g}"
            for r in rows
        ]
        self.emit(rows, "\n".join(lines) if rows else "No slow jobs in this window.")

    def do_alerts_check(self, **_):
        from scheduling import alerts

        overdue = alerts.deadman_check()
        self.emit(
            {"overdue": overdue},
            f"Overdue: {', '.join(overdue)}" if overdue else "No job is overdue.",
        )

    def do_stats_rebuild(self, **_):
        from scheduling import stats

        counted = stats.stats_rebuild()
        self.emit({"runs": counted}, f"Rebuilt daily statistics from {counted} runs.")

    def do_api_key(self, key_action: str, **options):
        if key_action == "create":
            privileges = [p.strip() for p in options["privileges"].split(",") if p.strip()]
            key, raw = services.api_key_create(
                name=options["name"],
                privileges=privileges,
                jobs=options["jobs"],
                expires_days=options["expires"],
            )
            row = self._api_key_row(key)
            self.emit(
                {**row, "key": raw},
                f"Created API key {key.name} (privileges {', '.join(key.privileges)}, jobs "
                f"{key.jobs}, expires {row['expires_at'] or 'never'}). The key, shown only "
                f"now:\n{raw}",
            )
            return
        if key_action == "revoke":
            key = ApiKey.objects.filter(name=options["name"]).first()
            if key is None:
                raise CommandError(f"No API key named {options['name']!r}.")
            services.api_key_revoke(key=key)
            self.stdout.write(f"Revoked API key {key.name}.")
            return
        rows = [self._api_key_row(key) for key in ApiKey.objects.order_by("name")]
        lines = [
            f"{'NAME':<24} {'PREFIX':<12} {'PRIVILEGES':<22} {'JOBS':<16} {'STATE':<8} LAST USED"
        ]
        lines += [
            f"{r['name'][:24]:<24} {r['prefix']:<12} {','.join(r['privileges'])[:22]:<22} "
            f"{r['jobs'][:16]:<16} {r['state']:<8} {r['last_used_at'] or '-'}"
            for r in rows
        ]
        self.emit(rows, "\n".join(lines))

    @staticmethod
    def _api_key_row(key: ApiKey) -> dict[str, Any]:
        def iso(moment):
            return moment.isoformat() if moment else None

        return {
            "name": key.name,
            "prefix": key.prefix,
            "privileges": key.privileges,
            "jobs": key.jobs,
            "state": key.state,
            "expires_at": iso(key.expires_at),
            "revoked_at": iso(key.revoked_at),
            "last_used_at": iso(key.last_used_at),
            "created_at": iso(key.created_at),
            "created_by": key.created_by,
        }

    def do_install_defaults(self, **_):
        created = services.defaults_install()
        self.emit(
            {"created": created},
            f"Installed default jobs: {', '.join(created)}"
            if created
            else "Default jobs already installed",
        )

    def do_adopt_beat(self, dry_run: bool = False, disable_originals: bool = False, **_):
        from scheduling import adoption

        permission = "django_celery_beat.change_periodictask"
        if disable_originals and self.user is not None and not self.user.has_perm(permission):
            raise CommandError(
                f"User {self.user.get_username()!r} lacks the permission {permission!r} "
                "for --disable-originals."
            )
        report = adoption.beat_schedule_adopt(dry_run=dry_run, disable_originals=disable_originals)
        verb = "Would adopt" if dry_run else "Adopted"
        lines = [
            f"+ {row['name']}: {row['task']}, {row['trigger']} ({row['timezone']}); next run "
            f"{row['next_run_time'] or '-'}" + ("" if row["enabled"] else " (disabled)")
            for row in report.adopted
        ]
        lines += [f"= {name}: a job of this name exists, left as it is" for name in report.existing]
        lines += [f"! {row['name']}: not adopted: {row['reason']}" for row in report.refused]
        lines += [
            f"{'Would disable' if dry_run else 'Disabled'} the original {name}"
            for name in report.disabled_originals
        ]
        lines.append(
            f"{verb} {len(report.adopted)}, already jobs {len(report.existing)}, "
            f"not adopted {len(report.refused)}"
            + (
                f", originals disabled {len(report.disabled_originals)}"
                if disable_originals
                else ""
            )
        )
        self.emit(report.as_dict(), "\n".join(lines))


def _links_arg(values: list[str]) -> list["chain_services.LinkSpec"]:
    """The links of ``--then`` (each ``NAME[:condition][:as=KWARG]``; '' alone: none)."""
    return [chain_services.link_parse(value) for value in values if value]
