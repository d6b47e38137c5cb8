"""The Celery app. Queues: ``explain`` (model compute), ``cluster`` and ``default``."""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import worker_ready
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "feedback_service.settings")

app = Celery("feedback_service")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    # Jobs record their own state in the database; nobody reads Celery results.
    task_ignore_result=True,
    result_backend=None,
    # A message is acknowledged after the task returns, so a worker that dies mid-task
    # leaves it for another worker; tasks are written to be safely repeated.
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_default_queue="default",
    # Each queue needs its own routing key: Celery binds queues declared without one to the
    # default key, and a direct exchange then copies every message into all of them.
    task_queues=tuple(Queue(name, routing_key=name) for name in ("default", "explain", "cluster")),
    task_default_routing_key="default",
    task_routes={
        "explain_worker.tasks.compute_predictions": {"queue": "explain"},
        "explain_worker.tasks.compute_explanations": {"queue": "explain"},
        "annotations.tasks.import_dataset": {"queue": "default"},
    },
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
app.autodiscover_tasks()
app.conf.imports = ("explain_worker.tasks",)


@worker_ready.connect
def _start_heartbeat(sender: object = None, **_: object) -> None:
    """Record this worker in the database every few seconds, for /healthz and the pages."""
    from feedback_service.heartbeat import start_heartbeat_thread

    consumer = getattr(sender, "consumer", None) or sender
    queues = sorted(q.name for q in consumer.task_consumer.queues) if consumer else []
    start_heartbeat_thread(hostname=getattr(sender, "hostname", "worker"), queues=queues)
