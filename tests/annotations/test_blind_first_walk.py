"""Walk every URL pattern (pages, API, media) unauthenticated and as each role while an
expert holds a blind-first task before giving their expectation (issue 16): the expert and
anonymous visitors find no prediction, ground truth, probability or map anywhere, and no
role gets a server error.

Every URL pattern is filled with the ids of the objects that exist (the round, the task, its
instance, the model version, the map, the job...), and every pattern must be tried: a new
URL added without an id here fails ``test_every_pattern_is_walked``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import numpy as np
import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

from annotations.models import Job, JobKind
from tests.annotations.review_fixtures import add_explanation, build_world, make_round

pytestmark = pytest.mark.django_db

# JSON keys that carry the model's view or the ground truth of an instance.
LEAKY_KEYS = {
    "prediction",
    "predictions",
    "probabilities",
    "confidence",
    "ground_truth",
    "predicted_label",
    "true_label",
    "label",
    "overlay_url",
    "raw_url",
    "thumbnail_url",
    "saliency_thumbnail_url",
    "alignment",
}


def _patterns(resolver: URLResolver | None = None, prefix: str = "") -> Iterator[str]:
    """Every URL pattern as a regex string, includes flattened (admin left out: Django's)."""
    resolver = resolver or get_resolver()
    for entry in resolver.url_patterns:
        pattern = prefix + str(entry.pattern.regex.pattern).lstrip("^").rstrip("$").rstrip("\\Z")
        if isinstance(entry, URLResolver):
            if pattern.startswith("admin/"):
                continue
            yield from _patterns(entry, pattern)
        elif isinstance(entry, URLPattern):
            yield pattern


@pytest.fixture
def blind(media_root):
    """A blind-first round whose instances all have a prediction and a map; the first
    expert holds a task and has not given their expectation."""
    world = build_world(with_files=True)
    review_round = make_round(world, explanation_method="")
    review_round.explanation_method = "gradcam"
    review_round.save(update_fields=["explanation_method"])
    exps = [add_explanation(world, i, np.ones((32, 32))) for i in world.instances]
    alice = world.client(world.experts[0])
    task = alice.post(f"/api/rounds/{review_round.pk}/tasks/next").json()
    # A second expert's submitted review, so review and export paths have content.
    bob = world.client(world.experts[1])
    other = bob.post(f"/api/rounds/{review_round.pk}/tasks/next").json()
    bob.post(
        f"/api/tasks/{other['id']}/expectation",
        {
            "expected_label": "cat",
            "expected_confidence": 3,
            "evidence": [],
            "concepts": [],
            "free_tags": [],
        },
        format="json",
    )
    review = bob.post(
        f"/api/tasks/{other['id']}/verdict",
        {"prediction_verdict": "correct", "feature_verdict": "relevant", "comment": ""},
        format="json",
    ).json()
    job = Job.objects.create(project=world.project, kind=JobKind.EXPLAIN, model_version=world.mv)
    instance = next(i for i in world.instances if i.pk == task["instance"]["id"])
    ids = {
        "project_id": world.project.pk,
        "round_id": review_round.pk,
        "task_id": task["id"],
        "instance_id": instance.pk,
        "model_version_id": world.mv.pk,
        "explanation_id": next(e.pk for e in exps if e.instance_id == instance.pk),
        "job_id": job.pk,
        "dataset_id": instance.dataset_id,
        "review_id": review["id"],
        "username": world.experts[0].username,
        # Django's password-reset confirmation link: any values (it checks them itself).
        "uidb64": "MQ",
        "token": "set-password",
        "format": "json",
    }
    return world, ids, instance, exps


def _urls(ids: dict) -> list[str]:
    urls = []
    for pattern in _patterns():
        names = re.findall(r"\(\?P<(\w+)>([^)]*)\)", pattern)
        choices: list[dict] = [{}]
        for name, regex in names:
            if name == "kind":
                options = re.findall(r"\w+", regex)
                choices = [c | {name: o} for c in choices for o in options]
            elif name == "path":
                choices = [c | {name: "x"} for c in choices]
            else:
                assert name in ids, f"no id for <{name}> in {pattern}: add one to the fixture"
                choices = [c | {name: ids[name]} for c in choices]
        for values in choices:
            url = pattern
            for name, value in values.items():
                url = re.sub(rf"\(\?P<{name}>[^)]*\)", str(value), url)
            url = url.replace("\\.", ".").replace("\\", "")
            urls.append("/" + url)
    return urls


def _leaks(response, instance, exps) -> list[str]:
    found = []
    body = b"".join(response.streaming_content) if response.streaming else response.content
    for exp in exps:
        if exp.instance_id != instance.pk:
            continue
        with exp.raw.open("rb") as fh:
            if body and body == fh.read():
                found.append("the raw map")
    if response.get("Content-Type", "").startswith("image/") and b"PNG" in body[:8]:
        # Only the task's own image may be served (it is what the expert judges).
        with instance.image.open("rb") as fh:
            if body != fh.read():
                found.append("an image that is not the instance's")
    if response.get("Content-Type", "").startswith("application/json"):
        data = json.loads(body or b"null")

        def walk(value):
            if isinstance(value, dict):
                for key, item in value.items():
                    if key in LEAKY_KEYS and item not in (None, [], {}, ""):
                        found.append(f"key {key!r}")
                    walk(item)
            elif isinstance(value, list):
                for item in value:
                    walk(item)

        walk(data)
    text = body.decode("utf-8", "replace")
    for exp in exps:
        if exp.raw.name in text:
            found.append(f"the map's file name {exp.raw.name}")
    return found


def _server_error(url: str, status: int) -> bool:
    # /healthz answers 503 on purpose while no worker runs (none does in these tests).
    return status >= 500 and not (url == "/healthz" and status == 503)


def test_every_pattern_is_walked(blind):
    _, ids, _, _ = blind
    urls = _urls(ids)
    assert len(urls) > 40
    assert any(u.startswith("/api/tasks/") for u in urls)


@pytest.mark.parametrize("debug", [False, True])
def test_media_files_are_never_served_directly(blind, client, settings, debug):
    settings.DEBUG = debug
    _, _, instance, exps = blind
    for name in (exps[0].raw.name, instance.image.name):
        assert client.get(f"/media/{name}").status_code == 404


def test_anonymous_visitors_get_nothing(blind):
    _, ids, instance, exps = blind
    client = APIClient()
    for url in _urls(ids):
        response = client.get(url)
        assert not _server_error(url, response.status_code), (url, response.status_code)
        if response.status_code == 200:
            # Public: health, the schema, and Django's login and password-reset pages.
            assert url in ("/healthz", "/api/schema/", "/api/docs/") or (
                url.startswith("/accounts/")
            ), url
        assert not _leaks(response, instance, exps), url


def test_the_expert_before_the_reveal_finds_no_trace_of_the_model(blind):
    world, ids, instance, exps = blind
    client = world.client(world.experts[0])
    client.force_login(world.experts[0])  # pages too
    seen = 0
    for url in _urls(ids):
        response = client.get(url)
        assert not _server_error(url, response.status_code), (url, response.status_code)
        leaks = _leaks(response, instance, exps)
        assert not leaks, (url, leaks)
        seen += response.status_code == 200
    assert seen >= 5  # the task, its image, the round, the inbox... were really read


@pytest.mark.parametrize("role", ["scientist", "approver", "viewer"])
def test_no_role_gets_a_server_error(blind, role):
    world, ids, _, _ = blind
    user = getattr(world, role)
    client = world.client(user)
    client.force_login(user)
    for url in _urls(ids):
        assert not _server_error(url, client.get(url).status_code), url


def test_the_leak_detector_sees_what_a_scientist_may_see(blind):
    """The detector above must be able to fail: a scientist's view of the same paths holds
    the predictions, the ground truth and the map."""
    world, ids, instance, exps = blind
    client = world.client(world.scientist)
    predictions = client.get(f"/api/model-versions/{ids['model_version_id']}/predictions/")
    assert "key 'probabilities'" in _leaks(predictions, instance, exps)
    raw = client.get(f"/api/explanations/{ids['explanation_id']}/raw/")
    assert "the raw map" in _leaks(raw, instance, exps)
