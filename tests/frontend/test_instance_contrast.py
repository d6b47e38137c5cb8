""" "Why P and not Q" on the instance page: Q defaults to the ground truth when the model got
the instance wrong, and to the class it ranked next when it got it right ("why kitchen and
not kitchen" explains nothing)."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from tests.annotations.review_fixtures import LABELS, build_world

pytestmark = pytest.mark.django_db


def _selected_q(world, instance) -> str:
    client = Client()
    client.force_login(world.scientist)
    html = client.get(f"/instances/{instance.pk}/").content.decode()
    select = html[html.index('id="target-q"') :]
    select = select[: select.index("</select>")]
    return re.search(r'<option value="([^"]+)" selected>', select).group(1)


def test_q_is_the_ground_truth_for_an_error_and_the_runner_up_for_a_correct_one(media_root):
    world = build_world()
    correct, wrong = world.instances[0], world.instances[1]
    assert correct.predictions.get().label == correct.label
    assert wrong.predictions.get().label != wrong.label
    assert _selected_q(world, wrong) == wrong.label
    runner_up = _selected_q(world, correct)
    assert runner_up != correct.label
    assert runner_up in LABELS
