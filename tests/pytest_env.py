"""Loaded with ``-p tests.pytest_env`` before Django is configured: test defaults that must be
in the environment when settings are read, so tests never share media or broker folders with a
development server running from the same checkout."""

import os
from pathlib import Path

_VAR = Path(__file__).resolve().parent.parent / "var"
os.environ.setdefault("MEDIA_ROOT", str(_VAR / "test-media"))
os.environ.setdefault("BROKER_FOLDER", str(_VAR / "test-broker"))
os.environ.setdefault("WORKER_HEARTBEAT_SECONDS", "1")
os.environ.setdefault("PREDICTION_BATCH_SIZE", "16")
os.environ.setdefault("PREDICTION_BATCHES_PER_TASK", "2")
# Browser and API tests log in many times a minute from one address; the throttles' own
# tests (tests/annotations/test_login_security.py) set the rates they test.
os.environ.setdefault("LOGIN_RATE_PER_IP", "100000/min")
os.environ.setdefault("LOGIN_RATE_PER_USER", "100000/min")
