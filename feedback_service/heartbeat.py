"""Worker liveness written to the database, so /healthz works on every broker transport."""

from __future__ import annotations

import logging
import os
import threading

from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

logger = logging.getLogger(__name__)


def beat_once(*, hostname: str, queues: list[str]) -> None:
    from annotations.models import WorkerHeartbeat

    WorkerHeartbeat.objects.update_or_create(
        hostname=hostname,
        defaults={"queues": queues, "pid": os.getpid(), "last_seen": timezone.now()},
    )


def start_heartbeat_thread(*, hostname: str, queues: list[str]) -> threading.Thread:
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                close_old_connections()
                beat_once(hostname=hostname, queues=queues)
            except Exception:
                logger.exception("worker heartbeat failed")
            finally:
                # Do not hold a connection (or a SQLite lock) between beats.
                connection.close()
            stop.wait(settings.WORKER_HEARTBEAT_SECONDS)

    thread = threading.Thread(target=run, name="heartbeat", daemon=True)
    thread.start()
    return thread
