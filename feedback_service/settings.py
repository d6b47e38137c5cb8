"""Settings for the expert-feedback service.

Every value that differs between a laptop and production is read from the environment
through the single accessor ``env`` (django-environ). With no variables set the service runs
embedded: SQLite under ``var/`` and Celery over kombu's ``filesystem://`` transport, so
``make run`` needs no server. Setting ``DATABASE_URL`` and ``CELERY_BROKER_URL`` (or
``REDIS_URL``) switches to PostgreSQL and Redis with separate worker processes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import time
from pathlib import Path

import environ
from csp.constants import NONCE
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()

# Off unless a developer asks for Django's debug pages with DEBUG=1: they show tracebacks with
# local variables, settings and every URL pattern, so no default may turn them on.
DEBUG: bool = env.bool("DEBUG", default=False)

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}
_EMBEDDED_DB = DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3"


def _embedded_secret_key(path: Path) -> str:
    """The embedded mode's key: made once, kept in ``var/secret_key`` (mode 0600) so that
    sessions survive a restart and the web process and the worker agree. Created with
    O_EXCL, so two processes starting together end up reading the same key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):  # the creator may not have written it yet
            key = path.read_text().strip()
            if key:
                return key
            time.sleep(0.02)
        raise ImproperlyConfigured(f"{path} is empty; delete it or set SECRET_KEY.") from None
    key = secrets.token_urlsafe(50)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key


SECRET_KEY: str | None = env.str("SECRET_KEY", default=None)
if not SECRET_KEY:
    if _EMBEDDED_DB:
        SECRET_KEY = _embedded_secret_key(
            Path(env.str("SECRET_KEY_FILE", default=str(VAR_DIR / "secret_key")))
        )
    elif DEBUG:
        SECRET_KEY = "insecure-development-key-set-SECRET_KEY-in-production"
    else:
        # Several web and worker machines must share one key: it cannot be made up here.
        raise ImproperlyConfigured("SECRET_KEY must be set with a server database and DEBUG off.")

ALLOWED_HOSTS: list[str] = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS: list[str] = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# --- Transport security -------------------------------------------------------------------
# One switch for a site served over HTTPS, on by default in the production layout
# (docker-compose.yml) but not here: it is also off with a server database, because `make
# test` and `make run` against PostgreSQL serve http://127.0.0.1 and a redirect to https:// or
# cookies marked Secure would break them. `manage.py check --deploy` warns while it is off.
# Each setting below follows it and can be overridden on its own.
HTTPS: bool = env.bool("HTTPS", default=False)
SECURE_SSL_REDIRECT: bool = env.bool("SECURE_SSL_REDIRECT", default=HTTPS)
# The container healthcheck calls http://127.0.0.1:8000/healthz from inside, past the proxy.
SECURE_REDIRECT_EXEMPT: list[str] = [r"^healthz$"]
# Behind a TLS-terminating proxy that sets X-Forwarded-Proto (and drops a client's own); only
# then may the header be trusted, or a client could claim HTTPS on a plain connection.
if env.bool("TRUST_X_FORWARDED_PROTO", default=HTTPS):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Sent on HTTPS responses only. Preload stays off unless asked for: it asks browsers to hard-code
# HTTPS for the whole registrable domain for months, a decision beyond this service.
SECURE_HSTS_SECONDS: int = env.int("SECURE_HSTS_SECONDS", default=365 * 24 * 3600 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS: bool = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD: bool = env.bool("SECURE_HSTS_PRELOAD", default=False)
SESSION_COOKIE_SECURE: bool = env.bool("SESSION_COOKIE_SECURE", default=HTTPS)
CSRF_COOKIE_SECURE: bool = env.bool("CSRF_COOKIE_SECURE", default=HTTPS)
# security.W021 only says the site could not be submitted to the preload list: a deliberate
# default (above), so it must not fail `check --deploy --fail-level WARNING`.
SILENCED_SYSTEM_CHECKS: list[str] = [] if SECURE_HSTS_PRELOAD else ["security.W021"]

# Content-Security-Policy on every response (django-csp). Scripts and style sheets come from
# this origin only; the one inline script, the Swagger page's set-up, carries the request's
# nonce (frontend/templates/drf_spectacular/swagger_ui.html), and the nonce appears in the
# header of that page alone. No inline style either: pages use classes (the matrix's heat
# classes), SVG presentation attributes and the CSSOM from script. data: images are the
# Swagger UI style sheet's icons.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'", NONCE],
        "style-src": ["'self'", NONCE],
        "img-src": ["'self'", "data:"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
        # Where browsers POST a report of each violation (e.g. a collector's URL); none if unset.
        "report-uri": env.str("CSP_REPORT_URI", default="") or None,
    }
}

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "annotations",
    # Before drf_spectacular: frontend/templates/drf_spectacular/swagger_ui.html adds a link
    # back to the app to the API docs page.
    "frontend",
    "drf_spectacular",
    "drf_spectacular_sidecar",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Before WhiteNoise, so that static files get the policy too: every response carries it.
    "csp.middleware.CSPMiddleware",
    # WhiteNoise serves static files from the web process, so no nginx is needed.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "feedback_service.urls"
# A form sent with an expired or foreign CSRF token gets the app's 403 page.
CSRF_FAILURE_VIEW = "frontend.views.csrf_failure"
WSGI_APPLICATION = "feedback_service.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------------------
if _EMBEDDED_DB:
    VAR_DIR.mkdir(exist_ok=True)
    # The web process and the worker share the file: WAL lets readers run beside one writer,
    # IMMEDIATE takes the write lock at BEGIN so two writers queue instead of deadlocking.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
    # Tests that start a real worker process need a database file both processes can open;
    # it sits beside the database, so a checkout with DATABASE_URL=sqlite:////elsewhere/db
    # runs its tests apart from another run in var/.
    DATABASES["default"]["TEST"] = {
        "NAME": str(Path(DATABASES["default"]["NAME"]).parent / "test.sqlite3")
    }
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DB_CONN_MAX_AGE", default=60))
    # Off by default: a check costs a round trip on every request, and Django already drops a
    # connection that failed at the end of the request, so a database restart costs one error.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = env.bool("DB_CONN_HEALTH_CHECKS", default=False)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Files --------------------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# WhiteNoise warns about a missing folder on every start; before the first collectstatic it
# serves from the apps' folders (WHITENOISE_USE_FINDERS below).
with contextlib.suppress(OSError):  # a read-only image has its files collected already
    STATIC_ROOT.mkdir(exist_ok=True)
MEDIA_URL = "media/"
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(VAR_DIR / "media")))
# Uploads land here before a worker imports them; it must be on storage the worker can read.
UPLOAD_ROOT = Path(env.str("UPLOAD_ROOT", default=str(MEDIA_ROOT / "uploads")))
# Workers read model files from a local path; with object storage (S3) each worker machine
# keeps a copy here, fetched on first use.
MODEL_CACHE_DIR = Path(env.str("MODEL_CACHE_DIR", default=str(VAR_DIR / "model-cache")))
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = 20 * 1024 * 1024

_s3_bucket = env.str("AWS_STORAGE_BUCKET_NAME", default="")
STORAGES = {
    "default": (
        # S3-compatible object storage through django-storages (needs `pip install boto3`);
        # AWS_S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are read by it.
        {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": {"bucket_name": _s3_bucket}}
        if _s3_bucket
        else {"BACKEND": "django.core.files.storage.FileSystemStorage"}
    ),
    # Compressed copies, no hashed names: a manifest would make every page depend on the last
    # collectstatic of this checkout (a stale one breaks pages and tests after an edit), and
    # templates rendered by the workers have no collected files at all. WhiteNoise serves
    # unhashed files with a short cache lifetime (WHITENOISE_MAX_AGE, 60 s).
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Also serve files straight from the apps' static folders, so pages have their CSS and JS with
# DEBUG off before (or without) collectstatic: tests, `manage.py runserver`, a worker.
WHITENOISE_USE_FINDERS = True

# --- Dataset import limits ----------------------------------------------------------------
IMPORT_MAX_UNCOMPRESSED_BYTES: int = env.int("IMPORT_MAX_UNCOMPRESSED_BYTES", default=2 * 1024**3)
IMPORT_MAX_FILES: int = env.int("IMPORT_MAX_FILES", default=200_000)
IMPORT_MAX_IMAGE_PIXELS: int = env.int("IMPORT_MAX_IMAGE_PIXELS", default=40_000_000)
IMPORT_MAX_UPLOAD_BYTES: int = env.int("IMPORT_MAX_UPLOAD_BYTES", default=1024**3)

# --- Model compute ------------------------------------------------------------------------
TORCH_THREADS: int | None = env.int("TORCH_THREADS", default=None)
TORCH_DEVICE: str = env.str("TORCH_DEVICE", default="auto")  # auto | cpu | cuda
PREDICTION_BATCH_SIZE: int = env.int("PREDICTION_BATCH_SIZE", default=64)
# A task handles this many batches, then re-queues itself: a crash loses one chunk at most.
PREDICTION_BATCHES_PER_TASK: int = env.int("PREDICTION_BATCHES_PER_TASK", default=8)
EXPLAIN_BATCH_SIZE: int = env.int("EXPLAIN_BATCH_SIZE", default=32)
EXPLAIN_BATCHES_PER_TASK: int = env.int("EXPLAIN_BATCHES_PER_TASK", default=4)

# --- Celery -------------------------------------------------------------------------------
CELERY_BROKER_URL: str = env.str(
    "CELERY_BROKER_URL", default=env.str("REDIS_URL", default="filesystem://")
)
BROKER_FOLDER = Path(env.str("BROKER_FOLDER", default=str(VAR_DIR / "broker")))
if CELERY_BROKER_URL.startswith("filesystem://"):
    # The web process and the workers exchange messages as files in one shared folder.
    for _sub in ("queue", "control"):
        (BROKER_FOLDER / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_FOLDER / "queue"),
        "data_folder_out": str(BROKER_FOLDER / "queue"),
        "control_folder": str(BROKER_FOLDER / "control"),
        "store_processed": False,
    }
else:
    # With acks_late an unacknowledged message comes back after this many seconds, so it
    # must exceed the hard time limit or a slow task would run twice.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600)
    }
CELERY_BEAT_SCHEDULE = {
    "expire-review-leases": {
        "task": "annotations.tasks.expire_leases",
        "schedule": env.int("LEASE_SWEEP_SECONDS", default=60),
    },
    "daily-review-digest": {
        "task": "annotations.tasks.send_digests",
        "schedule": env.int("DIGEST_SECONDS", default=24 * 3600),
    },
}
CELERY_TASK_SOFT_TIME_LIMIT: int = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=1800)
CELERY_TASK_TIME_LIMIT: int = env.int("CELERY_TASK_TIME_LIMIT", default=2100)
# Seconds after which a worker that has not written a heartbeat counts as gone (/healthz).
WORKER_HEARTBEAT_SECONDS: int = env.int("WORKER_HEARTBEAT_SECONDS", default=10)
WORKER_STALE_SECONDS: int = env.int("WORKER_STALE_SECONDS", default=45)
# Embedded broker only: a job queued this long without starting lost its message; re-send it.
JOB_LOST_MESSAGE_SECONDS: int = env.int("JOB_LOST_MESSAGE_SECONDS", default=600)

# --- API ----------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "annotations.api.authentication.PreparedTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # DRF's parsers, the JSON one answering 400 (not 500) for a body nested too deeply.
    "DEFAULT_PARSER_CLASSES": [
        "annotations.api.parsers.BoundedJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    # DRF's page numbers and django-filter's filters, except that an empty value or a page
    # that does not exist answers 400 naming the parameter (annotations/api/query_params.py).
    "DEFAULT_PAGINATION_CLASS": "annotations.api.query_params.StrictPageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["annotations.api.query_params.StrictFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "annotations.api.errors.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Expert feedback service API",
    "DESCRIPTION": (
        "Projects, datasets, model versions, predictions, explanations, jobs, review rounds, "
        "tasks and reviews."
    ),
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # From drf-spectacular-sidecar, served by WhiteNoise: no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # No validator badge: Swagger UI would send the schema's URL to validator.swagger.io.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    # The split choices appear as `split` and `default_split`: one enum in the schema.
    "ENUM_NAME_OVERRIDES": {"SplitEnum": "annotations.models.Split"},
    # The error answers (400, 401, 403, 404, 409, 415, 422, 429) where each operation can
    # give them, and output fields some callers do not get (annotations/api/schema.py).
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "annotations.api.schema.add_error_responses",
    ],
}

# PostgreSQL: run the hot path's statements as server-side prepared statements
# (annotations/prepared.py). Turn off behind a pooler in transaction mode.
DB_PREPARED_STATEMENTS: bool = env.bool("DB_PREPARED_STATEMENTS", default=True)

# Seconds a web process keeps a token's user (annotations/api/authentication.py); a token
# deleted or a user changed elsewhere is noticed within this. 0: look up on every request.
TOKEN_CACHE_SECONDS: float = env.float("TOKEN_CACHE_SECONDS", default=10.0)
# An API token stops working this many days after it was issued (0: never); POST
# /api/auth/token/ then issues a new one. A password change revokes the user's tokens.
TOKEN_LIFETIME_DAYS: float = env.float("TOKEN_LIFETIME_DAYS", default=30.0)
# Login attempts (the login page and POST /api/auth/token/), per client address and per
# username, in DRF's rate syntax; a refused attempt answers 429 with Retry-After.
LOGIN_RATE_PER_IP: str = env.str("LOGIN_RATE_PER_IP", default="20/min")
LOGIN_RATE_PER_USER: str = env.str("LOGIN_RATE_PER_USER", default="10/min")
# Where the throttles count: each process's memory by default; set CACHE_URL (e.g.
# redis://host:6379/1) so that every web process counts together.
CACHES = {"default": env.cache("CACHE_URL", default="locmemcache://")}

# --- Review rounds ------------------------------------------------------------------------
REVIEW_LEASE_SECONDS: int = env.int("REVIEW_LEASE_SECONDS", default=30 * 60)
# Base URL put in e-mails.
SITE_URL: str = env.str("SITE_URL", default="http://127.0.0.1:8000")

EMAIL_BACKEND: str = env.str(
    "EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend"
)
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"


def _no_traceback_below_500(record: logging.LogRecord) -> bool:
    """Django logs every 403 and 404 a view raised with the exception's traceback; in the
    terminal that reads like a crash. Keep the one line ("Forbidden (Permission denied):
    /path"), and every traceback of a 5xx or of anything else."""
    if getattr(record, "status_code", 500) < 500:
        record.exc_info = None
        record.exc_text = None
    return True


LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "no_traceback_below_500": {
            "()": "django.utils.log.CallbackFilter",
            "callback": _no_traceback_below_500,
        }
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "filters": ["no_traceback_below_500"]}
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}
