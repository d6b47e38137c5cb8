"""API contract run: schemathesis against a live server, once per role.

Starts gunicorn on a free port of 127.0.0.1 over a database of its own, seeds it through
the services (a project with six tiny images, a model version with predictions and
saliency maps, a blind-first round in which the expert has submitted one review and holds
a lease on another, a failed job, a comment; and a second project none of the four roles
belongs to), then runs ``schemathesis run --checks all`` for scientist, expert, approver
and viewer, each with the token ``POST /api/auth/token/`` gives them, with a fixed seed.
Path ids are drawn mostly from the seeded objects (schemathesis dictionaries), so the
operations answer with real objects, not only 404s.

Prints each role's requests and failures; the last line is JSON. Exits non-zero when a
role has any failure (server error, schema violation, or any other check), when the
server's log shows a traceback, or when a role sends fewer than ``--min-requests``
requests. One check is widened: ``positive_data_acceptance`` also takes 400 (see
``POSITIVE_STATUSES``).

    python scripts/schemathesis_run.py [--max-examples N] [--roles scientist,expert]

Database: with ``DATABASE_URL`` on PostgreSQL, a database of that name plus
``_contract`` (dropped and created again); otherwise SQLite in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ROLES = ("expert", "viewer", "approver", "scientist")  # the scientist's writes go last
PASSWORD = "contract-pass-1"
SEED = 20261204
LABELS = ["cat", "dog", "bird"]
# Checks whose failures the issue calls out; every other check counts as a failure too.
SERVER_ERROR = "not_a_server_error"
SCHEMA_VIOLATION = "response_schema_conformance"
# Schema-valid input the API may still refuse with 400 naming the field (write_config).
POSITIVE_STATUSES = ["2xx", "3xx", "400", "401", "403", "404", "409", "429"]
# Importing torchvision on a web worker's first GET /api/architectures/ takes seconds on a
# busy 2-core box; this is a contract run, not a latency test.
MAX_RESPONSE_SECONDS = 60
# Hypothesis stops an operation early once it has nothing new to try, so requests grow
# slower than this: 8 gave about 2,800 a role, 25 about 3,750 (2 min for the four roles on
# an idle 2-core box, twice that on a busy one), 60 about 5,700.
MAX_EXAMPLES = 25


# --- Seeding (runs in a child process with Django set up) ----------------------------------


def seed_world() -> dict[str, Any]:
    """Create the fixture through the services and return the ids schemathesis should use.
    Needs Django set up and a migrated, empty database."""
    import numpy as np
    from django.contrib.auth import get_user_model
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    from annotations import services
    from annotations.models import (
        Dataset,
        Explanation,
        Instance,
        Job,
        JobKind,
        JobStatus,
        ModelVersion,
        Prediction,
        ReviewRound,
        Role,
    )
    from annotations.services import comments, explanations
    from annotations.services import reviews as review_services
    from explain_worker import rendering

    users = {
        name: get_user_model().objects.create_user(username=name, password=PASSWORD)
        for name in (*ROLES, "outsider", "outsider-expert")
    }

    def project(slug: str, owner: Any) -> Any:
        return services.project_create(
            name=slug.title(),
            slug=slug,
            labels=LABELS,
            created_by=owner,
            concept_vocabulary=["fur", "beak"],
        )

    main = project("contract", users["scientist"])
    for role in (Role.EXPERT, Role.APPROVER, Role.VIEWER):
        services.membership_add(project=main, user=users[role], role=role)
    other = project("elsewhere", users["outsider"])
    services.membership_add(project=other, user=users["outsider-expert"], role=Role.EXPERT)

    ids: dict[str, set[Any]] = {}

    def note(kind: str, *values: Any) -> None:
        ids.setdefault(kind, set()).update(values)

    from io import BytesIO

    from PIL import Image

    for proj in (main, other):
        note("project_id", proj.pk)
        dataset = Dataset.objects.create(project=proj, name="tiny")
        note("dataset_id", dataset.pk)
        instances = []
        for i in range(6):
            buffer = BytesIO()
            Image.new("RGB", (16, 16), (i * 40, 255 - i * 40, 90)).save(buffer, format="PNG")
            name = default_storage.save(
                f"instances/{proj.slug}-{i}.png", ContentFile(buffer.getvalue())
            )
            instances.append(
                Instance.objects.create(
                    project=proj,
                    dataset=dataset,
                    image=name,
                    width=16,
                    height=16,
                    label=LABELS[i % 3],
                    split="test",
                    content_hash=f"{proj.slug}-{i}",
                    metadata={"source": "contract"},
                )
            )
        note("instance_id", *(inst.pk for inst in instances))
        mv = ModelVersion.objects.create(
            project=proj,
            version=1,
            name="m",
            kind="architecture",
            architecture="rooms_cnn",
            input_size=16,
            mean=[0.5] * 3,
            std=[0.25] * 3,
            label_order=LABELS,
            layer_names=["features.block4"],
            default_layer="features.block4",
            status="ready",
        )
        note("model_version_id", mv.pk)
        items = []
        for i, inst in enumerate(instances):
            probs = [0.1, 0.1, 0.1]
            probs[(i + i % 2) % 3] = 0.8  # every other prediction is wrong
            label = LABELS[probs.index(0.8)]
            Prediction.objects.create(
                instance=inst, model_version=mv, probabilities=probs, label=label, confidence=0.8
            )
            values = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
            items.append((inst.pk, label, rendering.encode_raw(values)))
        explanations.explanations_write(
            model_version=mv, method="gradcam", params={}, signed=False, items=items
        )
        note(
            "explanation_id",
            *Explanation.objects.filter(model_version=mv).values_list("pk", flat=True),
        )
        failed = Job.objects.create(
            project=proj,
            kind=JobKind.EXPLAIN,
            status=JobStatus.FAILED,
            model_version=mv,
            params={"method": "gradcam", "instance_ids": [instances[0].pk]},
            total=1,
            error="contract fixture: a failed job",
        )
        note("job_id", failed.pk)
        comment = comments.comment_add(
            instance=instances[0], author=proj.memberships.first().user, body="a comment"
        )
        note("comment_id", comment.pk)
        # A blind-first round; the method is set after creation so that nothing is queued.
        experts = [users["expert"]] if proj == main else [users["outsider-expert"]]
        review_round = review_services.round_create(
            model_version=mv,
            name="errors of the test split",
            sampling_strategy={"parts": [{"kind": "ids", "ids": [x.pk for x in instances]}]},
            created_by=proj.memberships.first().user,
            experts=experts,
            overlap=1,
            blind_first=True,
            explanation_method="",
        )
        ReviewRound.objects.filter(pk=review_round.pk).update(explanation_method="gradcam")
        review_round.refresh_from_db()
        note("round_id", review_round.pk)
        expert = experts[0]
        done = review_services.task_next(review_round=review_round, expert=expert)
        review_services.expectation_submit(
            task=done,
            expert=expert,
            data={
                "expected_label": "cat",
                "expected_confidence": 4,
                "evidence": [{"type": "box", "points": [[1, 1], [10, 12]]}],
                "concepts": ["fur"],
                "free_tags": ["whiskers"],
            },
        )
        review = review_services.verdict_submit(
            task=done,
            expert=expert,
            data={"prediction_verdict": "correct", "feature_verdict": "relevant"},
        )
        note("review_id", review.pk)
        held = review_services.task_next(review_round=review_round, expert=expert)
        note("task_id", done.pk, held.pk)
    note("username", *users)
    note("kind", "raw", "overlay", "thumbnail")
    return {key: sorted(values, key=str) for key, values in ids.items()}


def _seed_main(out: str) -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "feedback_service.settings")
    import django

    django.setup()
    Path(out).write_text(json.dumps(seed_world()))


# --- The run -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _database_url(tmp: Path) -> str:
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        return f"sqlite:///{tmp / 'contract.sqlite3'}"
    import psycopg2

    parts = urllib.parse.urlsplit(url)
    name = parts.path.lstrip("/") + "_contract"
    admin = parts._replace(path="/postgres").geturl()
    conn = psycopg2.connect(admin)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return parts._replace(path=f"/{name}").geturl()


def server_environment(tmp: Path, database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DEBUG"}
    env.update(
        DJANGO_SETTINGS_MODULE="feedback_service.settings",
        SECRET_KEY=os.environ.get("SECRET_KEY") or "contract-run-only",
        DATABASE_URL=database_url,
        MEDIA_ROOT=str(tmp / "media"),
        CELERY_BROKER_URL="filesystem://",  # nothing consumes; queued work just waits
        BROKER_FOLDER=str(tmp / "broker"),
        # Each role logs in once; schemathesis also fuzzes the token endpoint itself.
        LOGIN_RATE_PER_IP="1000000/min",
        LOGIN_RATE_PER_USER="1000000/min",
        CACHE_URL="locmemcache://",
        TOKEN_CACHE_SECONDS="0",
        LOG_LEVEL="WARNING",
    )
    return env


def _wait_for(url: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not answer at {url}") from None
            time.sleep(0.3)


def login(base: str, username: str) -> str:
    body = json.dumps({"username": username, "password": PASSWORD}).encode()
    request = urllib.request.Request(
        f"{base}/api/auth/token/", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["token"]


def _toml_value(values: list[Any]) -> str:
    return json.dumps(values)  # a JSON list of strings and integers is valid TOML


def write_config(path: Path, ids: dict[str, list[Any]], probability: float = 0.9) -> None:
    """A schemathesis.toml drawing each path id from the seeded objects ``probability`` of
    the time (the rest stays random: unknown ids must answer 404, not 500)."""
    lines = []
    for name, values in sorted(ids.items()):
        lines += [f"[dictionaries.{name}]", f"values = {_toml_value(values)}", ""]
    # Schema-valid input the API still refuses with 400 naming the field: rules no schema
    # states (an id that does not exist, a slug taken, an overlap above the round's
    # experts, a label outside the project's classes). Every other check keeps its defaults.
    lines += [
        "[checks.positive_data_acceptance]",
        f"expected-statuses = {_toml_value(POSITIVE_STATUSES)}",
        "",
    ]
    # No cache of earlier runs' crashes to replay: each run is the seed's requests alone.
    lines += ["[cache]", "enabled = false", ""]
    lines.append("[parameters]")
    for name in sorted(ids):
        lines.append(f'"path.{name}" = {{ dictionary = "{name}", probability = {probability} }}')
    path.write_text("\n".join(lines) + "\n")


def run_role(
    *,
    base: str,
    token: str,
    config: Path,
    report: Path,
    max_examples: int,
    seed: int,
    workers: int,
    max_time: int | None,
    phases: str | None = None,
) -> dict[str, Any]:
    cmd = [
        str(Path(sys.executable).parent / "schemathesis"),
        "--no-color",
        "--config-file",
        str(config),
        "run",
        f"{base}/api/schema/?format=json",
        "--checks",
        "all",
        "--seed",
        str(seed),
        "--max-examples",
        str(max_examples),
        "--workers",
        str(workers),
        "--header",
        f"Authorization: Token {token}",
        "--report",
        "ndjson",
        "--report-ndjson-path",
        str(report),
        # No example database: with a fixed seed every run sends the same requests.
        "--generation-database",
        "none",
        "--suppress-health-check",
        "all",
        "--continue-on-failure",
        "--request-timeout",
        str(MAX_RESPONSE_SECONDS + 30),
        "--max-response-time",
        str(MAX_RESPONSE_SECONDS),
    ]
    if max_time:
        cmd += ["--max-time", str(max_time)]
    if phases:
        cmd += ["--phases", phases]
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=report.parent)
    result = summarize(report)
    result["seconds"] = round(time.monotonic() - started, 1)
    result["exit_code"] = proc.returncode
    result["output"] = proc.stdout[-20000:] + proc.stderr[-5000:]
    return result


def summarize(report: Path) -> dict[str, Any]:
    """Requests, status codes and failures from schemathesis's NDJSON events."""
    requests = 0
    statuses: dict[str, int] = {}
    failures: dict[tuple[str, str, str], dict[str, Any]] = {}
    errors: list[str] = []
    if not report.exists():
        return {"requests": 0, "statuses": {}, "failures": [], "errors": ["no report"]}
    for line in report.read_text().splitlines():
        event = json.loads(line)
        for kind, body in event.items():
            if kind == "ScenarioFinished":
                recorder = body.get("recorder") or {}
                for interaction in (recorder.get("interactions") or {}).values():
                    response = interaction.get("response")
                    requests += 1
                    code = str(response["status_code"]) if response else "no response"
                    statuses[code] = statuses.get(code, 0) + 1
                for check_list in (recorder.get("checks") or {}).values():
                    for check in check_list:
                        if str(check.get("status")).lower() != "failure":
                            continue
                        failure = check.get("failure_info") or {}
                        detail = failure.get("failure") or {}
                        label = body.get("label") or recorder.get("label") or "?"
                        key = (check["name"], label, detail.get("title", ""))
                        entry = failures.setdefault(
                            key,
                            {
                                "check": check["name"],
                                "operation": label,
                                "title": detail.get("title", ""),
                                "message": (detail.get("message") or "")[:600],
                                "code": failure.get("code", ""),
                                "count": 0,
                            },
                        )
                        entry["count"] += 1
            elif kind == "NonFatalError":
                errors.append(str(body.get("info") or body)[:600])
    return {
        "requests": requests,
        "statuses": dict(sorted(statuses.items())),
        "failures": list(failures.values()),
        "errors": errors,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--roles", default=",".join(ROLES))
    parser.add_argument(
        "--max-examples",
        type=int,
        default=MAX_EXAMPLES,
        help=f"per operation and phase ({MAX_EXAMPLES}: about 3,750 requests a role)",
    )
    parser.add_argument("--min-requests", type=int, default=2000, help="per role")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--workers", type=int, default=2, help="schemathesis workers per role")
    parser.add_argument("--web-workers", type=int, default=3)
    parser.add_argument("--max-time", type=int, default=0, help="seconds per role (0: none)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--seed-into", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.seed_into:
        _seed_main(args.seed_into)
        return 0

    tmp = Path(tempfile.mkdtemp(prefix="schemathesis-run-"))
    python = sys.executable
    env = server_environment(tmp, _database_url(tmp))
    subprocess.run(
        [python, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True
    )
    ids_file = tmp / "ids.json"
    subprocess.run([python, __file__, "--seed-into", str(ids_file)], cwd=ROOT, env=env, check=True)
    ids = json.loads(ids_file.read_text())
    config = tmp / "schemathesis.toml"
    write_config(config, ids)

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = (tmp / "gunicorn.log").open("w")
    server = subprocess.Popen(
        [
            str(Path(python).parent / "gunicorn"),
            "feedback_service.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(args.web_workers),
            "--timeout",
            "60",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    results: dict[str, dict[str, Any]] = {}
    try:
        _wait_for(f"{base}/api/schema/?format=json")
        for role in [r for r in args.roles.split(",") if r]:
            token = login(base, role)
            result = run_role(
                base=base,
                token=token,
                config=config,
                report=tmp / f"{role}.ndjson",
                max_examples=args.max_examples,
                seed=args.seed,
                workers=args.workers,
                max_time=args.max_time or None,
            )
            results[role] = result
            _print_role(role, result, args.min_requests)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    server_errors = sum(
        f["count"] for r in results.values() for f in r["failures"] if f["check"] == SERVER_ERROR
    )
    log_text = (tmp / "gunicorn.log").read_text()
    tracebacks = len(re.findall(r"^Traceback", log_text, flags=re.M))
    ok = all(
        not r["failures"] and not r["errors"] and r["requests"] >= args.min_requests
        for r in results.values()
    )
    if tracebacks:
        print(f"gunicorn log: {tracebacks} traceback(s); see {tmp / 'gunicorn.log'}")
        ok = False
    summary = {
        "ok": ok,
        "seed": args.seed,
        "max_examples": args.max_examples,
        "server_errors": server_errors,
        "schema_violations": sum(
            f["count"]
            for r in results.values()
            for f in r["failures"]
            if f["check"] == SCHEMA_VIOLATION
        ),
        "roles": {
            role: {
                "requests": r["requests"],
                "failures": sum(f["count"] for f in r["failures"]),
                "seconds": r["seconds"],
                "statuses": r["statuses"],
            }
            for role, r in results.items()
        },
    }
    if args.keep or not ok:
        print(f"kept: {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(summary))
    return 0 if ok else 1


def _print_role(role: str, result: dict[str, Any], min_requests: int) -> None:
    print(
        f"{role}: {result['requests']} requests in {result['seconds']} s, "
        f"{sum(f['count'] for f in result['failures'])} failure(s), statuses {result['statuses']}"
    )
    if result["requests"] < min_requests:
        print(f"  fewer than {min_requests} requests")
    for failure in result["failures"]:
        print(
            f"  [{failure['check']}] {failure['operation']} x{failure['count']}: "
            f"{failure['title']}\n    {failure['message'][:400]}"
        )
    for error in result["errors"]:
        print(f"  error: {error}")
    if result["exit_code"] not in (0, 1) or (result["requests"] == 0):
        print(result["output"][-3000:])


if __name__ == "__main__":
    sys.exit(main())
