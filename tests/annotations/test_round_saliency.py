"""A review round shows the map of its method with the default settings, whatever other
maps of the same instance exist (a scientist's 64-step Integrated Gradients, another
Grad-CAM layer): those are kept beside it and never shown to the round's experts."""

from __future__ import annotations

import numpy as np
import pytest

from explain_worker import rendering
from tests.annotations.review_fixtures import (
    EXPECTATION,
    add_explanation,
    build_world,
    make_round_with_saliency,
)

pytestmark = pytest.mark.django_db


def _raw(response) -> np.ndarray:
    return rendering.decode_raw(b"".join(response.streaming_content))


def test_the_round_shows_the_default_settings_map(media_root):
    world = build_world(n=2, experts=1)
    shown, other_only = world.instances
    default = np.zeros((32, 32), dtype=np.float32)
    default[:8, :8] = 1.0
    add_explanation(world, shown, default)
    add_explanation(world, shown, np.ones((32, 32)), settings_key="0123456789abcdef")
    add_explanation(world, other_only, np.ones((32, 32)), settings_key="0123456789abcdef")
    review_round = make_round_with_saliency(world, blind_first=True)
    client = world.client(world.experts[0])

    seen = {}
    for _ in range(2):
        task = client.post(f"/api/rounds/{review_round.pk}/tasks/next").json()
        label = task["label_set"][0]
        revealed = client.post(
            f"/api/tasks/{task['id']}/expectation",
            EXPECTATION | {"expected_label": label, "evidence": []},
            format="json",
        ).json()
        seen[task["instance"]["id"]] = revealed["saliency"]
        client.post(
            f"/api/tasks/{task['id']}/verdict",
            {"prediction_verdict": "correct", "feature_verdict": "relevant"},
            format="json",
        )
    saliency = seen[shown.pk]
    assert saliency["ready"] is True
    raw = client.get(saliency["raw_url"])
    assert raw.status_code == 200
    np.testing.assert_allclose(_raw(raw), default, atol=1e-3)
    # Only a map of other settings: the round's map is not there yet.
    assert seen[other_only.pk]["ready"] is False
