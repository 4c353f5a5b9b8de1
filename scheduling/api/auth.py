"""Who may call the API: API keys (``Authorization: Bearer <key>``) scoped by privilege
and job-name glob, or staff users with a session under their Django permissions; and
the per-key rate limit.

Each view names, per action, the key privilege and the Django permission it needs
(``access``), so the two ways in are checked by one table.
"""

import re
from typing import Any

from django.contrib.auth.models import AnonymousUser
from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _
from rest_framework import authentication, exceptions, permissions, throttling

from scheduling import conf, selectors, services
from scheduling.models import ApiKey, Job, JobGroup


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer sj_<prefix>_<secret>``; a wrong, revoked or expired key is
    refused with 401 (no header: the next authentication, the session, is tried)."""

    keyword = "bearer"

    def authenticate(self, request) -> tuple[Any, ApiKey] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        scheme, _sep, raw = header.strip().partition(" ")
        if scheme.lower() != self.keyword:
            return None
        key = selectors.api_key_find(raw=raw.strip())
        if key is None:
            raise exceptions.AuthenticationFailed(_("Unknown API key."))
        if key.revoked_at is not None:
            raise exceptions.AuthenticationFailed(_("This API key was revoked."))
        if key.expires_at is not None and key.expires_at <= timezone.now():
            raise exceptions.AuthenticationFailed(_("This API key has expired."))
        services.api_key_touch(key=key)
        return AnonymousUser(), key

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="api"'


class StaffSessionAuthentication(authentication.SessionAuthentication):
    """The admin's session, for staff users only; unsafe methods need the CSRF token
    (DRF's check, as for any session)."""

    def authenticate(self, request):
        found = super().authenticate(request)
        if found is None or not (found[0].is_active and found[0].is_staff):
            return None
        return found


def request_key(request) -> ApiKey | None:
    return request.auth if isinstance(request.auth, ApiKey) else None


class _KeyAsUser:
    """A key where a service asks whether its caller may keep a job's stored secrets while
    other arguments change: only with the edit privilege, as an update of the job needs."""

    def __init__(self, key: ApiKey) -> None:
        self.key = key

    def has_perm(self, permission: str) -> bool:
        return permission == "scheduling.keep_secrets" and "edit" in self.key.privileges


def secret_keeper(request) -> Any:
    """The caller as a service's ``user`` (``services.job_run_now``): the session's user,
    or the key as :class:`_KeyAsUser`."""
    key = request_key(request)
    return _KeyAsUser(key) if key is not None else request.user


def actor(request) -> str:
    """Who the audit trail names: the key's name, or the session's user."""
    key = request_key(request)
    return key.name if key is not None else request.user.get_username()


class ApiAccess(permissions.BasePermission):
    """The key privilege or Django permission the view's ``access`` table names for the
    action (or method); and, for a key, that the job is inside its glob."""

    def has_permission(self, request, view) -> bool:
        privilege, permission = access_needed(request, view)
        key = request_key(request)
        if key is not None:
            if privilege not in key.privileges:
                raise exceptions.PermissionDenied(
                    _("The API key %(key)s lacks the privilege %(privilege)s.")
                    % {"key": key.name, "privilege": privilege}
                )
            return True
        if not request.user.is_authenticated:
            raise exceptions.NotAuthenticated(
                _("Send an API key (Authorization: Bearer <key>) or log in as staff.")
            )
        if not request.user.has_perm(f"scheduling.{permission}"):
            raise exceptions.PermissionDenied(
                _("User %(user)s lacks the permission %(permission)s.")
                % {"user": request.user.get_username(), "permission": f"scheduling.{permission}"}
            )
        return True

    def has_object_permission(self, request, view, obj) -> bool:
        job_name_check(request, reached_name(obj))
        return True


def reached_name(obj: Any) -> str:
    """The job name a key's glob is matched against for ``obj``: a job's own, else (a run,
    a backfill) its job's name as it is now, since a row keeps the name its job had when it
    was written; the name on the row only once the job was removed."""
    if isinstance(obj, Job):
        return obj.name
    job = getattr(obj, "job", None)
    return job.name if job is not None else getattr(obj, "job_name", "")


def access_needed(request, view) -> tuple[str, str]:
    """The (key privilege, Django permission) of the request's action or method; a
    method the view does not serve is a 405 (before its permission is asked)."""
    table = view.access
    needed = table.get(getattr(view, "action", None)) or table.get(request.method)
    if needed is None:
        raise exceptions.MethodNotAllowed(request.method)
    return needed


def job_name_check(request, name: str) -> None:
    """403 when the request's key does not reach the job ``name`` (its glob)."""
    key = request_key(request)
    if key is not None and not key.reaches(name):
        raise exceptions.PermissionDenied(
            _("The API key %(key)s does not reach the job %(job)s (its jobs: %(glob)s).")
            % {"key": key.name, "job": name, "glob": key.jobs}
        )


def glob_regex(glob: str) -> str:
    """The key's job glob (``*`` any text, ``?`` one character) as a regular expression
    both databases understand (SQLite's and PostgreSQL's)."""
    parts = {"*": ".*", "?": "."}
    return "^" + "".join(parts.get(c) or re.escape(c) for c in glob) + "$"


def scope(request, queryset: QuerySet, field: str) -> QuerySet:
    """``queryset`` limited to the jobs the request's key reaches (``field``: the job
    name's column; ``job_name`` of a run: its job's name now, that column once the job was
    removed, as :func:`reached_name`)."""
    key = request_key(request)
    if key is None or key.jobs in {"", "*"}:
        return queryset
    pattern = glob_regex(key.jobs)
    if field == "job_name":
        return queryset.filter(
            Q(job__name__regex=pattern) | Q(job__isnull=True, job_name__regex=pattern)
        )
    return queryset.filter(**{f"{field}__regex": pattern})


def groups_reached(request, groups: list[Any]) -> list[Any]:
    """The groups (:func:`scheduling.selectors.group_rows`) the request's key reaches: with
    a job glob, a group only when it has jobs and every one of them is inside the glob (a
    group's settings and pause act on all its jobs, and one it reaches shows no job it
    does not); without one (``*``), every group."""
    key = request_key(request)
    if key is None or key.jobs in {"", "*"}:
        return groups
    outside = set(
        Job.objects.filter(group__in=[group.name for group in groups])
        .exclude(name__regex=glob_regex(key.jobs))
        .values_list("group", flat=True)
    )
    return [group for group in groups if group.jobs and group.name not in outside]


def _group_denied(key: ApiKey, name: str) -> exceptions.PermissionDenied:
    return exceptions.PermissionDenied(
        _(
            "The API key %(key)s does not reach the group %(group)s: a key with a job "
            "glob reaches a group only when every job of it is inside the glob (its "
            "jobs: %(glob)s)."
        )
        % {"key": key.name, "group": name, "glob": key.jobs}
    )


def group_check(request, group: Any) -> None:
    """403 when the request's key does not reach ``group`` (:func:`groups_reached`)."""
    key = request_key(request)
    if key is not None and not groups_reached(request, [group]):
        raise _group_denied(key, group.name)


def group_join_check(request, name: str, job: Any = None) -> None:
    """403 when the request's key would put a job (``job``, or a new one) into group
    ``name`` it does not reach: a group whose settings act on all its jobs (a row on
    record: a cap, a queue, recipients, a pause) takes the new job into them, and would
    then hold a job outside the glob of the keys that reach it. A group that is only a
    label (the default one, say) may be joined."""
    key = request_key(request)
    if key is None or key.jobs in {"", "*"}:
        return
    if not JobGroup.objects.filter(name=name).exists():
        return
    others = Job.objects.filter(group=name)
    if job is not None:
        others = others.exclude(pk=job.pk)
    if others.exclude(name__regex=glob_regex(key.jobs)).exists():
        raise _group_denied(key, name)


class ApiKeyThrottle(throttling.SimpleRateThrottle):
    """At most ``SCHEDULING['API_RATE']`` requests per key (or per session user), e.g.
    ``600/minute``; over it, 429 with ``Retry-After``. Counted in Django's cache (the
    default one is per web process)."""

    scope = "api"

    def get_rate(self) -> str | None:
        return conf.get("API_RATE")

    def get_cache_key(self, request, view) -> str:
        key = request_key(request)
        if key is not None:
            ident = f"key:{key.pk}"
        elif request.user.is_authenticated:
            ident = f"user:{request.user.pk}"
        else:
            ident = f"ip:{self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}
