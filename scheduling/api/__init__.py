"""The REST API under ``/api/v1/`` (Django REST Framework, schema by drf-spectacular).

Thin over :mod:`scheduling.services` (writes) and :mod:`scheduling.selectors` (reads): a
job is validated by the same model rules as in the admin, the commands and the import.
``auth`` holds the API keys' authentication, privileges and rate limit; ``serializers``
the JSON shapes; ``views`` the endpoints; ``urls`` their routes.
"""
