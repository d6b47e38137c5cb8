"""Server time of the pages experts and scientists wait on, with the demo data loaded, and the
bytes of JS and CSS the review page loads.

Run from the repository root::

    .venv/bin/python benchmarks/pages.py            # full demo (2,800 images), ~2-4 min
    .venv/bin/python benchmarks/pages.py --small    # 280 images, under a minute

What it does:

1. Creates a fresh database (PostgreSQL ``feedback_pages_bench`` on 127.0.0.1:5432 by
   default; ``--database-url sqlite:///...`` for the embedded mode) and a temporary media
   folder, migrates, and collects the static files (``staticfiles/``, as ``make run`` does).
2. Seeds the demo exactly as ``make run`` does (``annotations.demo.seed_demo``: the rooms
   dataset, the demo CNN trained on the CPU), runs the prediction job in this process, and
   creates the demo review round (``demo.ensure_round``).
3. Times ``--requests`` GETs of each page through Django's handler in this process (no
   network; the time is the server's: middleware, view, queries, template):
   the review page as the demo expert; the confusion-matrix page as the demo scientist, for
   the test split, and with the most populated error cell open (its thumbnail grid).
   For context it also times the API call the review page makes first
   (``POST /api/rounds/{id}/tasks/next``, which returns the same lease every time).
4. Sums the JS and CSS files the review page's HTML links (as served, and gzipped).

The last line is JSON: ``review_p95_ms``, ``matrix_p95_ms`` (the worse of the plain and the
cell view), ``review_asset_kb``, and the details. Targets: review under 150 ms, matrix under
300 ms, review assets under 200 KB.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.task_handout import _admin_exec  # noqa: E402  (the one PostgreSQL admin helper)

DEFAULT_DB = "feedback_pages_bench"
TARGETS = {"review_p95_ms": 150, "matrix_p95_ms": 300, "review_asset_kb": 200}


def configure(database_url: str, media: Path) -> None:
    """Environment for settings, read once at django.setup()."""
    os.environ.update(
        DATABASE_URL=database_url,
        DEBUG="0",
        SECRET_KEY="pages-bench",
        ALLOWED_HOSTS="testserver,127.0.0.1,localhost",
        MEDIA_ROOT=str(media),
        CELERY_BROKER_URL=f"filesystem://{media / 'broker'}",
        BROKER_FOLDER=str(media / "broker"),
        EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend",
        LOG_LEVEL="ERROR",
        DJANGO_SETTINGS_MODULE="feedback_service.settings",
    )
    import django

    django.setup()


def seed(small: bool) -> dict:
    from annotations import demo
    from explain_worker import tasks as worker_tasks

    size = (
        demo.DemoSize(n_train=200, n_test=50, n_deployment=30, epochs=2)
        if small
        else demo.DemoSize()
    )
    started = time.perf_counter()
    result = demo.seed_demo(size=size, log=lambda line: print(f"  {line}", flush=True))
    if result.prediction_job is not None:
        worker_tasks.run_job_here(result.prediction_job.pk)
    review_round = demo.ensure_round(result.project, log=lambda line: print(f"  {line}"))
    if review_round is None:
        raise SystemExit("the demo round was not created")
    return {
        "project": result.project,
        "model_version": result.model_version,
        "round": review_round,
        "instances": result.project.instances.count(),
        "tasks": review_round.tasks.count(),
        "seed_s": round(time.perf_counter() - started, 1),
    }


def timed(client, method: str, path: str, n: int) -> dict:
    """Warm up, then time n requests; fails loudly on a non-200 answer."""
    call = getattr(client, method)
    for _ in range(3):
        response = call(path)
        if response.status_code != 200:
            raise SystemExit(f"{method.upper()} {path}: HTTP {response.status_code}")
    times = []
    for _ in range(n):
        started = time.perf_counter()
        response = call(path)
        times.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise SystemExit(f"{method.upper()} {path}: HTTP {response.status_code}")
    times.sort()
    return {
        "path": path,
        "n": n,
        "p50_ms": round(statistics.median(times), 2),
        "p95_ms": round(times[max(0, int(len(times) * 0.95) - 1)], 2),
        "max_ms": round(times[-1], 2),
        "html_kb": round(len(response.content) / 1024, 1),
    }


def page_assets(html: str) -> dict:
    """The JS and CSS files the page links, read from the collected static files as served."""
    from django.conf import settings
    from django.contrib.staticfiles.storage import staticfiles_storage

    prefix = "/" + settings.STATIC_URL.strip("/") + "/"
    urls = re.findall(r'<script[^>]+src="([^"]+)"', html) + re.findall(
        r'<link[^>]+rel="stylesheet"[^>]+href="([^"]+)"', html
    )
    files, raw, zipped = [], 0, 0
    for url in urls:
        if not url.startswith(prefix):
            raise SystemExit(f"asset outside the static files (a CDN?): {url}")
        path = Path(staticfiles_storage.path(url[len(prefix) :].split("?")[0]))
        if not path.is_file():
            raise SystemExit(f"asset not found: {url}")
        data = path.read_bytes()
        raw += len(data)
        zipped += len(gzip.compress(data))
        files.append({"url": url, "bytes": len(data)})
    return {"files": files, "kb": round(raw / 1024, 1), "gzip_kb": round(zipped / 1024, 1)}


def measure(seeded: dict, n: int) -> dict:
    from django.db.models import Count, F
    from django.test import Client

    from annotations.models import Prediction

    mv, review_round = seeded["model_version"], seeded["round"]
    expert, scientist = Client(), Client()
    expert.login(username="expert", password="demo-pass")
    scientist.login(username="scientist", password="demo-pass")

    review = timed(expert, "get", f"/rounds/{review_round.pk}/review/", n)
    assets = page_assets(expert.get(f"/rounds/{review_round.pk}/review/").content.decode())
    next_task = timed(expert, "post", f"/api/rounds/{review_round.pk}/tasks/next", n)

    matrix = timed(scientist, "get", f"/model-versions/{mv.pk}/matrix/", n)
    cell = (
        Prediction.objects.filter(model_version=mv, instance__split="test")
        .exclude(label=F("instance__label"))
        .values("instance__label", "label")
        .annotate(n=Count("id"))
        .order_by("-n")
        .first()
    )
    matrix_cell = None
    if cell is not None:
        matrix_cell = timed(
            scientist,
            "get",
            f"/model-versions/{mv.pk}/matrix/?true={cell['instance__label']}&pred={cell['label']}",
            n,
        )
        matrix_cell["cell_instances"] = cell["n"]
    return {
        "review": review,
        "review_assets": assets,
        "review_next_task": next_task,
        "matrix": matrix,
        "matrix_cell": matrix_cell,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="a small demo (quick check)")
    parser.add_argument("--requests", type=int, default=200, help="timed requests per page")
    parser.add_argument(
        "--database-url",
        default=f"postgres://postgres@127.0.0.1:5432/{DEFAULT_DB}",
        help="a PostgreSQL URL on 127.0.0.1 (created and dropped) or sqlite:///path",
    )
    parser.add_argument("--keep-db", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()

    media = Path(tempfile.mkdtemp(prefix="pages-bench-"))
    url = args.database_url
    pg_name = url.rsplit("/", 1)[1] if url.startswith("postgres") else None
    if pg_name:
        _admin_exec(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
        _admin_exec(f'CREATE DATABASE "{pg_name}"')
    try:
        configure(url, media)
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        # DEBUG off serves hashed names from the manifest, as in production (make run too).
        call_command("collectstatic", interactive=False, verbosity=0)
        print("Seeding the demo ...", flush=True)
        seeded = seed(args.small)
        print(
            f"  {seeded['instances']} instances, {seeded['tasks']} tasks, seeded in "
            f"{seeded['seed_s']} s",
            flush=True,
        )
        results = measure(seeded, args.requests)
    finally:
        if pg_name and not args.keep_db:
            from django.db import connections

            connections.close_all()
            _admin_exec(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
        shutil.rmtree(media, ignore_errors=True)

    matrix_p95 = max(
        results["matrix"]["p95_ms"],
        results["matrix_cell"]["p95_ms"] if results["matrix_cell"] else 0.0,
    )
    summary = {
        "review_p95_ms": results["review"]["p95_ms"],
        "matrix_p95_ms": matrix_p95,
        "review_asset_kb": results["review_assets"]["kb"],
        "review_asset_gzip_kb": results["review_assets"]["gzip_kb"],
        "review_next_task_p95_ms": results["review_next_task"]["p95_ms"],
        "matrix_plain_p95_ms": results["matrix"]["p95_ms"],
        "matrix_cell_p95_ms": results["matrix_cell"]["p95_ms"] if results["matrix_cell"] else None,
        "instances": seeded["instances"],
        "database": url.split("://")[0],
        "requests": args.requests,
        "loadavg_after": [round(v, 2) for v in os.getloadavg()],
        "details": results,
    }
    for name, result in results.items():
        if name == "review_assets":
            files = ", ".join(f"{f['url']} {f['bytes']} B" for f in result["files"])
            print(f"{name}: {result['kb']} KB ({result['gzip_kb']} KB gzipped): {files}")
        elif result:
            print(f"{name}: p50 {result['p50_ms']} ms, p95 {result['p95_ms']} ms  {result['path']}")
    verdicts = [
        f"{key} {summary[key]} < {limit}: {'met' if summary[key] < limit else 'MISSED'}"
        for key, limit in TARGETS.items()
    ]
    print("targets: " + "; ".join(verdicts))
    print(json.dumps(summary, default=str))


if __name__ == "__main__":
    main()
