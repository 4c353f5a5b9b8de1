"""Views outside the admin: the statistics JSON endpoint and Prometheus metrics."""

import datetime as dt
import hmac

from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.translation import gettext as _

from scheduling import conf, errors, selectors
from scheduling.models import Job


def _window(request: HttpRequest) -> tuple[dt.datetime, dt.datetime]:
    def parse(name: str) -> dt.datetime | None:
        return selectors.window_moment_parse(name=name, value=request.GET.get(name))

    return selectors.window_bounds(
        window=request.GET.get("window", "day"), since=parse("since"), until=parse("until")
    )


def _threshold(request: HttpRequest) -> float | None:
    value = request.GET.get("threshold")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        raise ValidationError(
            {"threshold": _("%(value)r is not a number of seconds.") % {"value": value}}
        ) from None


@staff_member_required
def statistics_json(request: HttpRequest) -> JsonResponse:
    """``?window=hour|day|week|month`` or ``?since=&until=`` (ISO), optional ``job=``,
    ``threshold=``: per-job statistics and the slow-jobs report."""
    if not request.user.has_perm("scheduling.view_job"):
        raise PermissionDenied
    try:
        since, until = _window(request)
        threshold = _threshold(request)
    except ValidationError as exc:
        return JsonResponse({"error": errors.one_line(exc)}, status=400)
    jobs = Job.objects.order_by("name")
    if request.GET.get("job"):
        jobs = jobs.filter(name=request.GET["job"])
        if not jobs:
            return JsonResponse({"error": f"No job named {request.GET['job']!r}."}, status=404)
    return JsonResponse(
        {
            "since": since.isoformat(),
            "until": until.isoformat(),
            "jobs": [selectors.job_statistics(job=job, since=since, until=until) for job in jobs],
            "slow_jobs": selectors.slow_jobs(since=since, until=until, threshold=threshold),
        }
    )


def metrics_allowed(request: HttpRequest) -> bool:
    token = conf.get("METRICS_TOKEN")
    if token == "public":
        return True
    user = getattr(request, "user", None)
    if (
        user is not None
        and user.is_active
        and user.is_staff
        and user.has_perm("scheduling.view_job")
    ):
        return True
    # Compared as bytes: compare_digest refuses str with non-ASCII characters (a 500).
    header = request.headers.get("Authorization", "").encode("utf-8", "backslashreplace")
    return bool(token) and hmac.compare_digest(header, f"Bearer {token}".encode())


def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus exposition of the scheduler's metrics (access per ``METRICS_TOKEN``)."""
    if not metrics_allowed(request):
        return HttpResponse(
            "Forbidden: set SCHEDULING_METRICS_TOKEN or log in as staff.\n",
            status=403,
            content_type="text/plain",
        )
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
    from prometheus_client.registry import CollectorRegistry

    from scheduling.metrics import SchedulerCollector

    registry = CollectorRegistry()
    registry.register(SchedulerCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
