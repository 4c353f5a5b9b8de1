"""What the OpenAPI schema adds to drf-spectacular's: the bearer key scheme, and the error
answers any operation can give (bad input, no or a wrong key, a missing privilege, an
unknown job or run, the rate limit), each a JSON object naming the field or the reason."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension

ERRORS = {
    "400": "Bad input: each field (or parameter) with its messages.",
    "401": "No API key, or a wrong, expired or revoked one.",
    "403": "The key lacks the privilege, or the job (a job of the group) is outside its glob.",
    "404": "No such job, group or run.",
    "405": "The method is not allowed here.",
    "406": "Only JSON is served.",
    "415": "Only JSON is read.",
    "429": "Over the key's rate limit; retry after the Retry-After header's seconds.",
}


def add_errors(result: dict, generator, request, public) -> dict:
    """drf-spectacular post-processing hook: the error responses on every operation."""
    components = result.setdefault("components", {})
    components.setdefault("schemas", {})["Error"] = {
        "type": "object",
        "additionalProperties": True,
        "description": "{'detail': reason} or {field: [messages]}",
    }
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            for code, text in ERRORS.items():
                responses.setdefault(
                    code,
                    {
                        "description": text,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                        },
                    },
                )
    return result


class ApiKeyScheme(OpenApiAuthenticationExtension):
    """The API key's security scheme: ``Authorization: Bearer <key>``."""

    target_class = "scheduling.api.auth.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema) -> dict:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key: manage.py jobs api-key create (or the admin).",
        }


class StaffSessionScheme(OpenApiAuthenticationExtension):
    """The admin's session cookie (staff users, with the CSRF token for writes)."""

    target_class = "scheduling.api.auth.StaffSessionAuthentication"
    name = "cookieAuth"

    def get_security_definition(self, auto_schema) -> dict:
        return {"type": "apiKey", "in": "cookie", "name": "sessionid"}
