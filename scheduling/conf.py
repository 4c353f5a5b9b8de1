"""App settings: every default is here, ``settings.SCHEDULING`` overrides any of them;
read them with :func:`get`."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # Timezone of a new job when none is given (None: the project's TIME_ZONE).
    "DEFAULT_TIMEZONE": None,
    # Modules imported at start-up (besides every installed app's ``jobs`` module)
    # whose @job_task functions become runnable jobs.
    "EXTRA_JOB_MODULES": [],
    # Per-job defaults (APScheduler's job_defaults in the seed design).
    "DEFAULT_COALESCE": False,
    "DEFAULT_MAX_INSTANCES": 3,
    "DEFAULT_MISFIRE_GRACE_TIME": 15,
    # Overlap policy buffer all: most runs of one job waiting for a free slot; a fire time
    # over the bound is skipped.
    "BUFFER_ALL_LIMIT": 100,
    # A waiting run is sent to the workers (queued) once a slot is free; one not started
    # this many seconds later is sent again (its message may have been lost: the copy
    # that comes second is dropped, a run starts once).
    "QUEUED_RESEND_SECONDS": 60,
    # A running execution's lease: renewed every third of this; a run whose worker died
    # is counted as lost (and its max-instances slot freed) once it expires.
    "LEASE_SECONDS": 30,
    # How often each worker looks for runs whose lease expired (their worker died) and
    # records them as lost (seconds; 0: only when the job next starts).
    "REAP_INTERVAL": 10,
    # Cancelling a run: its worker looks for a cancel request of the runs in progress in
    # each process this often (seconds; one indexed query, only while runs are going) and
    # writes the progress they report at most this often; a cancelled run whose function
    # has not stopped CANCEL_GRACE_SECONDS after the request is terminated (its process
    # killed), by the first worker's periodic check (REAP_INTERVAL) that sees it.
    "CANCEL_CHECK_INTERVAL": 1.0,
    "CANCEL_GRACE_SECONDS": 30.0,
    # How long a worker keeps trying to record how a run ended while the database does
    # not answer (seconds), keeping the run's lease alive meanwhile.
    "FINISH_RETRY_SECONDS": 120,
    # Beat: a standby takes over once the leader has not renewed its lease for this long
    # (the leader renews every third of it, and in every pass that sends); beat looks for
    # due jobs at least this often (so an edit that makes a job due sooner is seen within
    # it); most runs sent per transaction. Beat's bounds follow the lease (a pass publishes
    # for a fifth of it, each broker operation gives up after a tenth, its PostgreSQL
    # statements and idle transactions end after half: scheduling.scheduler).
    "BEAT_LEASE_SECONDS": 5.0,
    "BEAT_POLL_INTERVAL": 1.0,
    "BEAT_BATCH_SIZE": 1000,
    # Whether beat's messages emit Celery's task-sent event (Flower then lists a run while
    # it waits in the queue). Off: an event costs as much as the message itself, and a
    # burst of due jobs is sent about twice as fast without; Flower lists each run from the
    # moment a worker receives it. Run-now from the admin always emits it.
    "BEAT_SENT_EVENTS": False,
    # Longest result summary stored on an execution row.
    "RESULT_SUMMARY_MAX_CHARS": 2000,
    # Maintenance: cleanup.
    "EXECUTION_RETENTION_DAYS": 30,
    "KEEP_LAST_RUNS": 100,
    "CLEANUP_BATCH_SIZE": 1000,
    "BACKUP_RETENTION_DAYS": 30,
    # Maintenance: backup (None: the folder "backups" in the project's VAR_DIR).
    "BACKUP_DIR": None,
    "BACKUP_KEEP": 14,
    "BACKUP_HISTORY_DAYS": 7,
    # Maintenance: health check.
    "HEALTH_WORKER_PING_TIMEOUT": 2.0,
    "HEALTH_BEAT_MAX_SILENCE": 60,
    "HEALTH_DISK_MIN_FREE_PERCENT": 5,
    "HEALTH_MEMORY_MIN_AVAILABLE_PERCENT": 5,
    # Monitoring: a run slower than this (seconds) is slow, unless its job says otherwise.
    "SLOW_THRESHOLD": 60.0,
    # Alert delivery (a task on the "alerts" queue, scheduling.alert_tasks): each socket
    # operation of a webhook POST may take this long (seconds); a failed delivery is tried
    # again up to WEBHOOK_RETRIES times, after WEBHOOK_RETRY_BACKOFF x 2^attempt seconds
    # (at most WEBHOOK_RETRY_BACKOFF_MAX), and never later than WEBHOOK_DEADLINE seconds
    # after the alert.
    "WEBHOOK_TIMEOUT": 5.0,
    "WEBHOOK_RETRIES": 5,
    "WEBHOOK_RETRY_BACKOFF": 2.0,
    "WEBHOOK_RETRY_BACKOFF_MAX": 120.0,
    "WEBHOOK_DEADLINE": 600.0,
    # Networks (CIDR, e.g. "10.1.0.0/16") whose addresses may receive webhooks although
    # they are not public: intranet receivers. Every other private, loopback, link-local,
    # multicast or reserved address is refused (scheduling.webhooks).
    "WEBHOOK_ALLOWED_NETWORKS": [],
    # How often each worker runs the dead man's switch check (seconds; 0: never).
    "DEADMAN_CHECK_INTERVAL": 60,
    # /metrics: None = staff users with the view permission only; a string = also anyone
    # sending "Authorization: Bearer <token>"; "public" = no check (trusted networks).
    "METRICS_TOKEN": None,
    # REST API: requests per API key (or per session user), DRF's rate syntax.
    "API_RATE": "600/minute",
    # Keyword-argument names whose values are masked in the admin, exports and results.
    "SENSITIVE_KWARGS": r"pass(word|wd)?|token|secret|api[_-]?key|private[_-]?key|credential|auth",
    # Where the admin links to for the live view.
    "FLOWER_URL": "http://127.0.0.1:5555/",
}


# Defaults that follow a project setting, for the settings whose default above is None.
_FROM_PROJECT: dict[str, Callable[[], Any]] = {
    "DEFAULT_TIMEZONE": lambda: settings.TIME_ZONE,
    "BACKUP_DIR": lambda: Path(getattr(settings, "VAR_DIR", Path.cwd() / "var")) / "backups",
}


def get(name: str) -> Any:
    """Return the app setting ``name``: ``settings.SCHEDULING[name]`` or its default."""
    overrides = getattr(settings, "SCHEDULING", {})
    value = overrides[name] if name in overrides else DEFAULTS[name]
    if value is None and name in _FROM_PROJECT:
        return _FROM_PROJECT[name]()
    return value
