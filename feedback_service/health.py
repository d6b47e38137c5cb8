"""GET /healthz: database, broker and worker reachability as JSON; 503 when one is down."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.http import require_GET


def check_database() -> dict[str, Any]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return {"ok": True, "vendor": connection.vendor}
    except Exception as exc:
        return {"ok": False, "vendor": connection.vendor, "error": str(exc)[:300]}


def broker_url() -> str:
    from feedback_service.celery import app

    return str(app.conf.broker_url)


def check_broker() -> dict[str, Any]:
    from kombu import Connection

    from feedback_service.celery import app

    url = broker_url()
    transport = url.split("://", 1)[0]
    if transport == "filesystem":
        folder = Path(app.conf.broker_transport_options["data_folder_in"])
        ok = folder.is_dir() and os.access(folder, os.W_OK)
        return {"ok": ok, "transport": transport} | ({} if ok else {"error": f"{folder} missing"})
    try:
        with Connection(url, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return {"ok": True, "transport": transport}
    except Exception as exc:
        return {"ok": False, "transport": transport, "error": str(exc)[:300]}


def check_workers() -> dict[str, Any]:
    from annotations.models import WorkerHeartbeat

    try:
        cutoff = timezone.now() - timedelta(seconds=settings.WORKER_STALE_SECONDS)
        alive = list(
            WorkerHeartbeat.objects.filter(last_seen__gte=cutoff).values("hostname", "queues")
        )
    except Exception as exc:
        return {"ok": False, "error": str(exc)[:300]}
    queues = sorted({q for w in alive for q in w["queues"]})
    result: dict[str, Any] = {"ok": bool(alive), "count": len(alive), "queues": queues}
    if not alive:
        result["error"] = f"no worker heartbeat in the last {settings.WORKER_STALE_SECONDS} s"
    return result


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    checks = {"database": check_database(), "broker": check_broker(), "worker": check_workers()}
    ok = all(c["ok"] for c in checks.values())
    return JsonResponse(
        {"status": "ok" if ok else "unavailable", "checks": checks}, status=200 if ok else 503
    )
