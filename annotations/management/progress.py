"""Progress bars for management commands (tqdm), shared by every command that waits on a job."""

from __future__ import annotations

import time
from collections.abc import Callable

from tqdm import tqdm

from annotations.models import Job


def follow_job(job_id: int, *, poll_seconds: float = 1.0, timeout: float | None = None) -> Job:
    """Show a job's progress until it finishes (or the timeout passes). Returns the job."""
    job = Job.objects.get(pk=job_id)
    started = time.monotonic()
    with tqdm(
        total=job.total or None, desc=f"{job.get_kind_display()} #{job.pk}", unit="item"
    ) as bar:
        while True:
            job.refresh_from_db()
            if job.total and bar.total != job.total:
                bar.total = job.total
            bar.n = job.done
            bar.set_postfix_str(job.status)
            bar.refresh()
            if job.is_finished:
                return job
            if timeout is not None and time.monotonic() - started > timeout:
                return job
            time.sleep(poll_seconds)


def progress_bar(desc: str) -> tuple[Callable[[int, int], None], Callable[[], None]]:
    """A (callback, close) pair for services that report (done, total)."""
    bar = tqdm(desc=desc, unit="item")

    def update(done: int, total: int) -> None:
        if total and bar.total != total:
            bar.total = total
        bar.n = done
        bar.refresh()

    return update, bar.close
