# The image of the production layout (docker-compose.yml): the same image runs the web
# process (gunicorn, the default command), the Celery workers and beat.
#
#   docker build -t feedback-service .
#
# torch and torchvision are the exact pair pinned in requirements.txt, from PyPI: those wheels
# carry the CUDA libraries (several GB), so one image serves CPU and GPU workers alike.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The service runs as this user; the media volume (MEDIA_ROOT) and var/ belong to it. A named
# volume mounted on /data/media starts with this folder's owner, so uploads can be written.
RUN groupadd --system --gid 1000 app \
    && useradd --system --uid 1000 --gid app --home-dir /app --shell /usr/sbin/nologin app \
    && mkdir -p /app/var /data/media \
    && chown app:app /app /app/var /data/media

WORKDIR /app

# Dependencies first, so that a code change does not reinstall PyTorch.
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY --chown=app:app . .

USER 1000:1000

# Static files compressed once, at build (WhiteNoise serves them from staticfiles/). The
# variables are for this step only: no key, database or broker folder ends up in the image.
RUN SECRET_KEY=collectstatic-only \
    DATABASE_URL=sqlite:////tmp/collectstatic.sqlite3 \
    BROKER_FOLDER=/tmp/collectstatic-broker \
    python manage.py collectstatic --noinput --verbosity 0 \
    && rm -rf /tmp/collectstatic-broker /tmp/collectstatic.sqlite3*

ENV MEDIA_ROOT=/data/media \
    DEBUG=0

EXPOSE 8000

# /healthz answers 200 when the database, the broker and a worker are up (503 otherwise). It
# is asked over plain HTTP from inside the container (exempt from the HTTPS redirect) with
# the first of ALLOWED_HOSTS as Host, so the check passes whatever the site's name is.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as r; h = os.environ.get('ALLOWED_HOSTS', 'localhost').split(',')[0].strip(); h = 'localhost' if h in ('', '*') else h.lstrip('.'); r.urlopen(r.Request('http://127.0.0.1:8000/healthz', headers={'Host': h}), timeout=4)"]

CMD ["gunicorn", "feedback_service.wsgi", "--bind", "0.0.0.0:8000", "--workers", "3", \
     "--timeout", "120", "--access-logfile", "-"]
