"""Scheduled jobs: defined in the admin, fired by Celery Beat, run by Celery workers."""
