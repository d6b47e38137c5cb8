from datetime import timedelta

import pytest
from django.utils import timezone

from annotations.models import WorkerHeartbeat

pytestmark = pytest.mark.django_db


def test_503_without_a_worker(client):
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["broker"]["ok"] is True
    assert body["checks"]["worker"]["ok"] is False


def test_200_with_a_fresh_heartbeat_and_503_when_it_is_stale(client):
    beat = WorkerHeartbeat.objects.create(
        hostname="w1", queues=["explain"], last_seen=timezone.now()
    )
    response = client.get("/healthz")
    assert response.status_code == 200, response.json()
    assert response.json()["checks"]["worker"]["queues"] == ["explain"]
    beat.last_seen = timezone.now() - timedelta(minutes=5)
    beat.save()
    assert client.get("/healthz").status_code == 503


def test_503_when_the_broker_is_down(client, monkeypatch):
    from feedback_service import health

    WorkerHeartbeat.objects.create(hostname="w1", queues=[], last_seen=timezone.now())
    assert client.get("/healthz").status_code == 200
    monkeypatch.setattr(health, "broker_url", lambda: "redis://127.0.0.1:1/0")
    response = client.get("/healthz")
    assert response.status_code == 503
    broker = response.json()["checks"]["broker"]
    assert broker["ok"] is False
    assert broker["transport"] == "redis"
    assert broker["error"]


def test_503_when_the_database_is_down(client, monkeypatch):
    from feedback_service import health

    def broken(*args, **kwargs):
        raise RuntimeError("connection refused")

    monkeypatch.setattr(health.connection, "cursor", broken)
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["database"] == {
        "ok": False,
        "vendor": health.connection.vendor,
        "error": "connection refused",
    }
