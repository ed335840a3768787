"""The HTTP service: OpenAI-compatible endpoints and a per-tenant index/search API behind tenant API
keys, with an admin API, health, readiness and Prometheus metrics. ``pulse-ai serve`` runs it.

A thin layer over the Python API: the tenant comes from the API key (``platform.api_keys.verify``)
and every call goes through ``ai.tenant(...)``, so budgets, routing, fallback and the usage ledger
are the library's. See ``app.py`` (start-up, ownership), ``errors.py`` (the status codes),
``auth.py`` (keys, scopes), ``ratelimit.py`` and ``middleware.py`` (limits, headers, metrics).
"""

from pulse_ai.service.app import app_from_env, check_workers, create_app
from pulse_ai.service.settings import ADMIN_KEY_ENV, ServiceSettings

__all__ = ["ADMIN_KEY_ENV", "ServiceSettings", "app_from_env", "check_workers", "create_app"]
