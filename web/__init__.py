"""The HTTP API (``/api/v1``, OpenAPI at ``/api/v1/openapi.json``) and the operator console."""
