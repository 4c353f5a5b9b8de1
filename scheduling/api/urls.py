"""Routes of the API under ``/api/v1/``: jobs, job groups, executions, statistics, upcoming
runs, backfills, health, the OpenAPI schema and its interactive docs (served from this server)."""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.routers import SimpleRouter

from scheduling.api import schema, views

assert schema.ApiKeyScheme  # registers the security schemes with drf-spectacular

router = SimpleRouter()
router.register("jobs", views.JobViewSet, basename="api-job")
router.register("executions", views.ExecutionViewSet, basename="api-execution")
router.register("backfills", views.BackfillViewSet, basename="api-backfill")
router.register("groups", views.GroupViewSet, basename="api-group")

urlpatterns = [
    path("statistics/", views.StatisticsView.as_view(), name="api-statistics"),
    path("upcoming/", views.UpcomingView.as_view(), name="api-upcoming"),
    path("health/", views.HealthView.as_view(), name="api-health"),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("redoc/", SpectacularRedocView.as_view(url_name="api-schema"), name="api-redoc"),
    *router.urls,
]
