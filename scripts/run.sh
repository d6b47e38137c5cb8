#!/usr/bin/env bash
# `make run`: migrate, seed the demo, then serve the web app and one Celery worker together.
# With no environment set this is the embedded mode (SQLite + filesystem broker); with
# DATABASE_URL and CELERY_BROKER_URL set it uses those servers instead.
#
# HOST and PORT (default 127.0.0.1:8000) say where the web server listens; WEB_WORKERS (2) and
# WORKER_CONCURRENCY (1) size it and the worker. DEBUG is off unless you set DEBUG=1.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY="$VENV/bin/python"
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}
WORKER_LOG=var/worker.log

"$PY" manage.py migrate --noinput
"$PY" manage.py collectstatic --noinput --verbosity 0

mkdir -p var
# The worker writes everything (its banner, task lines, errors) to $WORKER_LOG, so this
# terminal shows the seeding and the web server only. It runs in its own session: Ctrl-C
# reaches the web server alone, and the worker gets exactly one TERM from stop_worker, a
# warm shutdown that lets a running task finish. -B runs Celery beat inside this worker
# (lease expiry, daily digests); production runs a separate beat process (docker-compose.yml).
echo "Starting the worker; its log is $WORKER_LOG (follow it with: tail -f $WORKER_LOG)"
setsid "$VENV/bin/celery" -A feedback_service worker -B --schedule var/celerybeat-schedule \
  -Q default,explain,cluster --concurrency "${WORKER_CONCURRENCY:-1}" --loglevel INFO \
  >>"$WORKER_LOG" 2>&1 &
WORKER_PID=$!

stop_worker() {
  if kill -0 "$WORKER_PID" 2>/dev/null; then
    echo "Stopping the worker (it finishes a running task first; see $WORKER_LOG)..."
    kill -TERM "$WORKER_PID" 2>/dev/null || true
    wait "$WORKER_PID" 2>/dev/null || true
  fi
}
trap stop_worker EXIT
# Ctrl-C or a TERM is the normal way to stop: clean up and exit 0, so make reports no error.
trap 'exit 0' INT TERM HUP

# Seeding trains the demo CNN here, queues its predictions for the worker above, waits for
# them and then opens the demo review round for the user "expert".
"$PY" manage.py seed_demo --wait

cat <<MSG

  The service is at http://$HOST:$PORT/   (API docs: http://$HOST:$PORT/api/docs/,
  health: http://$HOST:$PORT/healthz). Demo logins are printed above (password: demo-pass).
  The web server's log follows here; the worker's is in $WORKER_LOG. Stop both with Ctrl-C.

MSG
"$VENV/bin/gunicorn" feedback_service.wsgi --bind "$HOST:$PORT" --workers "${WEB_WORKERS:-2}" \
  --access-logfile - --timeout 120
