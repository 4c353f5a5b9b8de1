"""Views outside the admin: the statistics JSON endpoint and Prometheus metrics."""

import datetime as dt
import hmac

from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse

from scheduling import conf, selectors
from scheduling.models import Job


def _window(request: HttpRequest) -> tuple[dt.datetime, dt.datetime]:
    def parse(name: str) -> dt.datetime | None:
        value = request.GET.get(name)
        return dt.datetime.fromisoformat(value) if value else None

    return selectors.window_bounds(
        window=request.GET.get("window", "day"), since=parse("since"), until=parse("until")
    )


@staff_member_required
def statistics_json(request: HttpRequest) -> JsonResponse:
    """``?window=hour|day|week|month`` or ``?since=&until=`` (ISO), optional ``job=``,
    ``threshold=``: per-job statistics and the slow-jobs report."""
    if not request.user.has_perm("scheduling.view_job"):
        raise PermissionDenied
    try:
        since, until = _window(request)
        threshold = float(request.GET["threshold"]) if request.GET.get("threshold") else None
    except ValidationError as exc:
        return JsonResponse({"error": "; ".join(exc.messages)}, status=400)
    except ValueError as exc:
        return JsonResponse({"error": str(exc)}, status=400)
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
    header = request.headers.get("Authorization", "")
    return bool(token) and hmac.compare_digest(header, f"Bearer {token}")


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
