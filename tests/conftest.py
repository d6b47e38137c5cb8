from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import pytest
from django.conf import settings
from PIL import Image

from tests.factories import make_image_bytes


def pytest_sessionstart(session: pytest.Session) -> None:
    """In CI every service must be real and reachable: fail the run, never skip, if not."""
    if os.environ.get("REQUIRE_REAL_SERVICES") != "1":
        return
    problems = []
    if not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
        problems.append("DATABASE_URL does not point at PostgreSQL")
    if not settings.CELERY_BROKER_URL.startswith("redis://"):
        problems.append("CELERY_BROKER_URL does not point at Redis")
    else:
        import redis

        try:
            redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=3).ping()
        except Exception as exc:
            problems.append(f"Redis is not reachable: {exc}")
    if problems:
        pytest.exit("REQUIRE_REAL_SERVICES=1 but " + "; ".join(problems), returncode=3)


@pytest.fixture(autouse=True)
def _fresh_token_cache():
    """Each test starts with an empty per-process token cache."""
    from annotations.api.authentication import token_cache

    token_cache.clear()
    yield
    token_cache.clear()


@pytest.fixture
def image_zip() -> callable:
    """Build an in-memory zip from {path: bytes}; returns a file-like object."""

    def build(files: dict[str, bytes], name: str = "data.zip") -> io.BytesIO:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as zf:
            for path, data in files.items():
                zf.writestr(path, data)
        buffer.seek(0)
        buffer.name = name
        return buffer

    return build


@pytest.fixture
def png() -> callable:
    return make_image_bytes


@pytest.fixture
def media_root(settings, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.UPLOAD_ROOT = tmp_path / "media" / "uploads"
    return settings.MEDIA_ROOT


__all__ = ["Image"]


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings) -> None:
    # Real hashing costs ~0.3 s a user; tests create dozens.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
