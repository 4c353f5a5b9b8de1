"""Project URLs: the admin is the product's web interface."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from scheduling import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("scheduling.api.urls")),
    path("api/statistics/", views.statistics_json, name="scheduling-statistics"),
    path("metrics", views.metrics, name="scheduling-metrics"),
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
]
