"""Worker liveness written to the database, so /healthz works on every broker transport, and
the sweep that re-queues jobs whose worker died."""

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


def _send_on_own_connection(task_name: str, job_id: int) -> None:
    # The worker's producer pool belongs to its event loop; a message sent through it from
    # this thread can wait forever. A connection of our own, used once, cannot.
    from feedback_service.celery import app

    with app.connection_for_write() as conn:
        app.send_task(task_name, args=[job_id], connection=conn)


def sweep_orphaned_jobs() -> list[int]:
    from annotations.services import jobs_requeue_orphaned

    embedded = str(settings.CELERY_BROKER_URL).startswith("filesystem://")
    return jobs_requeue_orphaned(
        stale_seconds=settings.WORKER_STALE_SECONDS,
        queued_seconds=settings.JOB_LOST_MESSAGE_SECONDS if embedded else None,
        send=_send_on_own_connection,
    )


def start_heartbeat_thread(*, hostname: str, queues: list[str]) -> threading.Thread:
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                close_old_connections()
                beat_once(hostname=hostname, queues=queues)
                # Every worker sweeps; the claim inside makes one of them win each job.
                sweep_orphaned_jobs()
            except Exception:  # a failed beat or sweep must not end the thread
                logger.exception("worker heartbeat failed")
            finally:
                # Do not hold a connection (or a SQLite lock) between beats.
                connection.close()
            stop.wait(settings.WORKER_HEARTBEAT_SECONDS)

    thread = threading.Thread(target=run, name="heartbeat", daemon=True)
    thread.start()
    return thread
