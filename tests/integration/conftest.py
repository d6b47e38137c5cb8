"""A real Celery worker process for integration tests (never eager mode).

The worker is started against the same test database, media folder and broker as the test
process, so what the test queues through the API is consumed by a separate process exactly
as in production. Tests using it must use ``transactional_db`` so their rows are committed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


def _database_url() -> str:
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    user = db.get("USER") or ""
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    return f"postgres://{auth}{db.get('HOST') or 'localhost'}:{db.get('PORT') or 5432}/{db['NAME']}"


def _purge_broker() -> None:
    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        for sub in ("queue", "control"):
            folder = settings.BROKER_FOLDER / sub
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True, exist_ok=True)
    else:
        from feedback_service.celery import app

        app.control.purge()


@dataclass
class WorkerProcess:
    hostname: str
    process: subprocess.Popen
    log: Path

    def kill(self, sig: int = signal.SIGKILL) -> None:
        # The worker's process group: the prefork parent and its pool children die together.
        os.killpg(self.process.pid, sig)
        self.process.wait(timeout=30)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def start_worker(transactional_db, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    from annotations.models import WorkerHeartbeat

    _purge_broker()
    started: list[WorkerProcess] = []

    def start(queues: str = "default,explain,cluster", timeout: float = 90) -> WorkerProcess:
        hostname = f"test-{uuid.uuid4().hex[:8]}@localhost"
        env = os.environ | {
            "DATABASE_URL": _database_url(),
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "MEDIA_ROOT": str(settings.MEDIA_ROOT),
            "UPLOAD_ROOT": str(settings.UPLOAD_ROOT),
            "BROKER_FOLDER": str(settings.BROKER_FOLDER),
            "PREDICTION_BATCH_SIZE": str(settings.PREDICTION_BATCH_SIZE),
            "PREDICTION_BATCHES_PER_TASK": str(settings.PREDICTION_BATCHES_PER_TASK),
            "EXPLAIN_BATCH_SIZE": str(settings.EXPLAIN_BATCH_SIZE),
            "EXPLAIN_BATCHES_PER_TASK": str(settings.EXPLAIN_BATCHES_PER_TASK),
            # A killed worker's jobs are taken over quickly.
            "WORKER_STALE_SECONDS": "4",
            "WORKER_HEARTBEAT_SECONDS": "1",
            "TORCH_THREADS": "1",
        }
        log = tmp_path / f"{hostname}.log"
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "feedback_service",
                "worker",
                "-Q",
                queues,
                "-n",
                hostname,
                "--concurrency",
                "1",
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
            ],
            cwd=ROOT,
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        worker = WorkerProcess(hostname=hostname, process=process, log=log)
        started.append(worker)
        deadline = time.monotonic() + timeout
        while not WorkerHeartbeat.objects.filter(hostname=hostname).exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start:\n{worker.output()[-4000:]}")
            time.sleep(0.3)
        return worker

    yield start
    for worker in started:
        if worker.process.poll() is None:
            worker.kill(signal.SIGTERM)


def wait_for(predicate: Callable[[], bool], timeout: float = 120, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what or predicate}")
