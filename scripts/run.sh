#!/usr/bin/env bash
# `make run`: migrate, seed the demo, then serve the web app and one Celery worker together.
# With no environment set this is the embedded mode (SQLite + filesystem broker); with
# DATABASE_URL and CELERY_BROKER_URL set it uses those servers instead.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY="$VENV/bin/python"
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}

"$PY" manage.py migrate --noinput
"$PY" manage.py collectstatic --noinput --verbosity 0

mkdir -p var
# -B runs Celery beat inside this worker (lease expiry, daily digests); production runs a
# separate beat process (docker-compose.yml).
"$VENV/bin/celery" -A feedback_service worker -B --schedule var/celerybeat-schedule \
  -Q default,explain,cluster --concurrency "${WORKER_CONCURRENCY:-1}" --loglevel INFO \
  --logfile var/worker.log &
WORKER_PID=$!
trap 'kill "$WORKER_PID" 2>/dev/null || true; wait "$WORKER_PID" 2>/dev/null || true' EXIT INT TERM

# Seeding trains the demo CNN here, queues its predictions for the worker above, waits for
# them and then opens the demo review round for the user "expert".
"$PY" manage.py seed_demo --wait

cat <<MSG

  The service is at http://$HOST:$PORT/   (API docs: http://$HOST:$PORT/api/docs/,
  health: http://$HOST:$PORT/healthz). Demo logins are printed above (password: demo-pass).
  The worker log is var/worker.log. Stop with Ctrl-C.

MSG
"$VENV/bin/gunicorn" feedback_service.wsgi --bind "$HOST:$PORT" --workers "${WEB_WORKERS:-2}" \
  --access-logfile - --timeout 120
