"""Django settings, driven by environment variables with defaults that need no server.

Default: SQLite (WAL) in ``VAR_DIR`` and kombu's ``filesystem://`` broker, so the whole
product runs on a fresh machine. Set ``DATABASE_URL`` (e.g. ``postgres://...``) and
``CELERY_BROKER_URL`` (e.g. ``redis://127.0.0.1:6379/0``) to run on servers.
"""

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def comma_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def env_list(name: str, default: str = "") -> list[str]:
    return comma_list(os.environ.get(name, default))


# Runtime files (SQLite database, filesystem broker folders, backups) live here.
VAR_DIR = Path(os.environ.get("VAR_DIR", BASE_DIR / "var")).resolve()
VAR_DIR.mkdir(parents=True, exist_ok=True)

# Off unless asked for: scripts/run and scripts/test set DJANGO_DEBUG=1 for development.
DEBUG = env_bool("DJANGO_DEBUG", False)
_DEV_SECRET_KEY = "dev-only-insecure-key-do-not-use-in-production"
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", _DEV_SECRET_KEY)
if not DEBUG and SECRET_KEY == _DEV_SECRET_KEY:
    raise ImproperlyConfigured(
        "Set DJANGO_SECRET_KEY (the built-in key is for development only), "
        "or DJANGO_DEBUG=1 on a development machine."
    )
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

# Production hardening, on whenever DEBUG is off (each can be turned off by its variable,
# e.g. behind a proxy that terminates TLS: set DJANGO_SECURE_PROXY_SSL_HEADER=1).
# https://docs.djangoproject.com/en/5.2/howto/deployment/checklist/
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", not DEBUG)
SESSION_COOKIE_SECURE = env_bool("DJANGO_SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("DJANGO_CSRF_COOKIE_SECURE", not DEBUG)
SECURE_HSTS_SECONDS = int(
    os.environ.get("DJANGO_SECURE_HSTS_SECONDS", "0" if DEBUG else "31536000")
)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
if env_bool("DJANGO_SECURE_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_beat",
    "django_celery_results",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "scheduling",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "scheduling.context_processors.links",
            ],
        },
    },
]

# https://github.com/jazzband/dj-database-url
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
        conn_max_age=int(os.environ.get("DATABASE_CONN_MAX_AGE", "0")),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets beat, workers and the web server read while one of them writes;
    # IMMEDIATE transactions take the write lock up front instead of failing mid-way.
    # https://docs.djangoproject.com/en/5.2/ref/databases/#sqlite-notes
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
    # Tests start beat and workers as separate processes: they need a file, not :memory:.
    DATABASES["default"]["TEST"] = {
        "NAME": os.environ.get("SQLITE_TEST_NAME", str(VAR_DIR / "test-db.sqlite3"))
    }
    # The statistics index covers two more columns on PostgreSQL; SQLite indexes only
    # its keys, which is all it needs at the sizes it serves.
    SILENCED_SYSTEM_CHECKS = ["models.W040"]
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # The few statements every run executes (scheduling.sql.cursor) are prepared after
    # this many executions on a connection; Django's own cursors bind values on the client
    # and are never prepared. Empty: never (e.g. behind PgBouncer older than 1.21 in
    # transaction mode). https://www.psycopg.org/psycopg3/docs/advanced/prepare.html
    _prepare = os.environ.get("DATABASE_PREPARE_THRESHOLD", "5")
    DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = (
        int(_prepare) if _prepare else None
    )
    # Max instances counts a job's running runs after taking its row lock, and needs each
    # statement to see what was committed before it started: READ COMMITTED, whatever the
    # database's own default (scheduling.E002 checks it). Set on the session, because a
    # run's statements commit as implicit transactions that psycopg's isolation_level
    # does not reach. https://www.postgresql.org/docs/15/transaction-iso.html
    _session = DATABASES["default"]["OPTIONS"].get("options", "")
    DATABASES["default"]["OPTIONS"]["options"] = (
        f"{_session} -c default_transaction_isolation=read\\ committed".strip()
    )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = os.environ.get("LANGUAGE_CODE", "en")
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
LOCALE_PATHS = [BASE_DIR / "scheduling" / "locale"]
TIME_ZONE = os.environ.get("TIME_ZONE", "Asia/Shanghai")
USE_I18N = True
# Stock admin fields to the second with the UTC offset (project/formats/<language>/).
FORMAT_MODULE_PATH = ["project.formats"]
# Keep USE_TZ on: django-celery-beat's timezone bugs cluster around USE_TZ=False (#798, #918).
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
# Serve app static files straight from their folders while developing.
WHITENOISE_USE_FINDERS = DEBUG

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    # On the root logger: Celery's worker and beat replace the root's handlers with their
    # own (worker_hijack_root_logger), so each line is written once, in Celery's format.
    "root": {"handlers": ["console"], "level": "WARNING"},
    # Django's own logger keeps its level but writes through the root's handler (instead
    # of its console handler as well: every line twice).
    "loggers": {"scheduling": {"level": "INFO"}, "django": {"level": "INFO"}},
}

# --- Celery -------------------------------------------------------------------------------
# https://docs.celeryq.dev/en/stable/userguide/configuration.html
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    # kombu's filesystem transport: queues are folders, no broker server needed; ours
    # writes each message file whole before a worker can see it (scheduling.broker).
    from scheduling.broker import filesystem_settings

    globals().update(filesystem_settings(VAR_DIR / "broker"))
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_RESULT_BACKEND = "django-db"
# Extended results store the task name, args and the periodic task name in TaskResult.
CELERY_RESULT_EXTENDED = True
CELERY_TIMEZONE = TIME_ZONE
CELERY_ENABLE_UTC = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# One message at a time per worker process: a long job never holds others in its prefetch.
# Workers that run many short jobs drain the queue faster with more (benchmarks/).
CELERY_WORKER_PREFETCH_MULTIPLIER = int(os.environ.get("CELERY_WORKER_PREFETCH_MULTIPLIER", "1"))
# Worker processes keep their database connection for this many tasks: Celery's Django
# fixup otherwise closes it before and after every task, and opening a PostgreSQL
# connection costs more than recording a short run. A connection that fails is dropped
# at once (scheduling.runs.run), so a database restart costs one re-queued run at most.
# https://github.com/celery/celery/issues/4116 (read as CELERY_DB_REUSE_MAX by the fixup)
CELERY_DB_REUSE_MAX = int(os.environ.get("CELERY_DB_REUSE_MAX", "1000"))
# Task events feed Flower's live view (Flower also switches them on in workers it watches).
CELERY_WORKER_SEND_TASK_EVENTS = os.environ.get("CELERY_WORKER_SEND_TASK_EVENTS", "1") == "1"
CELERY_TASK_SEND_SENT_EVENT = True
CELERY_BEAT_SCHEDULER = "scheduling.scheduler:JobScheduler"
# Runs go to the default "celery" queue, alert deliveries to their own "alerts" queue, so a
# slow or dead webhook receiver never holds up a run. Both are declared: a worker started
# without -Q consumes both; give alerts their own worker with `celery -A project worker -Q
# alerts` (and the runs with `-Q celery`) to keep deliveries off the runs' processes.
# https://docs.celeryq.dev/en/stable/userguide/routing.html
CELERY_TASK_DEFAULT_QUEUE = "celery"
CELERY_TASK_QUEUES = (Queue("celery"), Queue("alerts"))
CELERY_TASK_ROUTES = {"scheduling.deliver_alert": {"queue": "alerts"}}
# A job may name its own queue (Job.queue): Celery declares a queue it does not know when
# a run is sent to it and when a worker consumes it (-Q reports), the one a worker
# started without -Q leaves alone. Job priorities (0-9): RabbitMQ needs x-max-priority
# on every queue, these and the jobs' own (this sets it on all that Celery declares; a
# queue declared before without it must be deleted once, RabbitMQ refuses to change
# it); kombu's Redis transport keeps one list per priority step, one step per priority.
# https://docs.celeryq.dev/en/stable/userguide/routing.html#special-routing-options
CELERY_TASK_CREATE_MISSING_QUEUES = True
CELERY_TASK_QUEUE_MAX_PRIORITY = 9
if CELERY_BROKER_URL.split(":", 1)[0] in {"redis", "rediss", "sentinel"}:
    CELERY_BROKER_TRANSPORT_OPTIONS = {"priority_steps": list(range(10))}

# The REST API (scheduling/api): its authentication, permissions and rate limit are set
# on its views; here only the schema's title.
# https://drf-spectacular.readthedocs.io/en/latest/settings.html
SPECTACULAR_SETTINGS = {
    "TITLE": "Scheduled jobs API",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {"ExecutionStatusEnum": "scheduling.models.ExecutionStatus"},
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "scheduling.api.schema.add_errors",
    ],
}
REST_FRAMEWORK = {"DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema"}

# --- scheduling app -----------------------------------------------------------------------
# Every default lives in scheduling/conf.py; here only what the environment sets overrides it.
_SCHEDULING_FROM_ENVIRONMENT = {
    "DEFAULT_TIMEZONE": ("SCHEDULING_DEFAULT_TIMEZONE", str),
    "EXTRA_JOB_MODULES": ("SCHEDULING_EXTRA_JOB_MODULES", comma_list),
    "FLOWER_URL": ("FLOWER_URL", str),
    "BACKUP_DIR": ("SCHEDULING_BACKUP_DIR", str),
    "EXECUTION_RETENTION_DAYS": ("SCHEDULING_RETENTION_DAYS", int),
    "KEEP_LAST_RUNS": ("SCHEDULING_KEEP_LAST_RUNS", int),
    "LEASE_SECONDS": ("SCHEDULING_LEASE_SECONDS", float),
    "REAP_INTERVAL": ("SCHEDULING_REAP_INTERVAL", float),
    "CANCEL_CHECK_INTERVAL": ("SCHEDULING_CANCEL_CHECK_INTERVAL", float),
    "CANCEL_GRACE_SECONDS": ("SCHEDULING_CANCEL_GRACE_SECONDS", float),
    "BUFFER_ALL_LIMIT": ("SCHEDULING_BUFFER_ALL_LIMIT", int),
    "BACKFILL_RATE": ("SCHEDULING_BACKFILL_RATE", float),
    "BACKFILL_CHECK_INTERVAL": ("SCHEDULING_BACKFILL_CHECK_INTERVAL", float),
    "BACKFILL_MAX_RUNS": ("SCHEDULING_BACKFILL_MAX_RUNS", int),
    "QUEUED_RESEND_SECONDS": ("SCHEDULING_QUEUED_RESEND_SECONDS", float),
    "BEAT_LEASE_SECONDS": ("SCHEDULING_BEAT_LEASE_SECONDS", float),
    "BEAT_POLL_INTERVAL": ("SCHEDULING_BEAT_POLL_INTERVAL", float),
    "SLOW_THRESHOLD": ("SCHEDULING_SLOW_THRESHOLD", float),
    "METRICS_TOKEN": ("SCHEDULING_METRICS_TOKEN", str),
    "API_RATE": ("SCHEDULING_API_RATE", str),
    "DEADMAN_CHECK_INTERVAL": ("SCHEDULING_DEADMAN_CHECK_INTERVAL", float),
    "WEBHOOK_ALLOWED_NETWORKS": ("SCHEDULING_WEBHOOK_ALLOWED_NETWORKS", comma_list),
    "WEBHOOK_TIMEOUT": ("SCHEDULING_WEBHOOK_TIMEOUT", float),
    "WEBHOOK_RETRIES": ("SCHEDULING_WEBHOOK_RETRIES", int),
    "WEBHOOK_RETRY_BACKOFF": ("SCHEDULING_WEBHOOK_RETRY_BACKOFF", float),
    "WEBHOOK_DEADLINE": ("SCHEDULING_WEBHOOK_DEADLINE", float),
}
SCHEDULING = {
    name: read(os.environ[variable])
    for name, (variable, read) in _SCHEDULING_FROM_ENVIRONMENT.items()
    if os.environ.get(variable)
}

# Alert e-mails: https://docs.djangoproject.com/en/5.2/topics/email/
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "25"))
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "scheduler@localhost")
