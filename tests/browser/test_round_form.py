"""The new-round form refuses a round that cannot work, with the service's message on the
field, and offers only the saliency methods the chosen model version can show (issue 15,
item 2)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from annotations.models import ModelVersion, ReviewRound
from tests.annotations.review_fixtures import LABELS, build_world

pytestmark = pytest.mark.django_db(transaction=True)


def _options(page) -> list[str]:
    return (
        page.get_by_label("Saliency shown")
        .locator("option")
        .evaluate_all("els => els.map(e => e.value)")
    )


def test_the_form_refuses_more_reviews_per_instance_than_experts(page, login, media_root):
    world = build_world(n=6, experts=2, with_files=True)
    login(page, world.scientist.username)
    page.goto(f"/projects/{world.project.pk}/rounds/new/")
    page.get_by_label("Round name").fill("three each")
    page.get_by_label("Experts per instance").fill("3")
    page.get_by_role("button", name="Create round").click()

    field = page.get_by_label("Experts per instance")
    expect(page.locator("body")).to_contain_text("need at least 3 experts in the round; it has 2")
    expect(field).to_have_value("3")  # what was typed is still there
    expect(page.get_by_label("Round name")).to_have_value("three each")
    assert not ReviewRound.objects.exists()


def test_the_form_offers_no_gradcam_for_a_torchscript_version(page, login, media_root):
    world = build_world(n=6, experts=2, with_files=True)
    scripted = ModelVersion.objects.create(
        project=world.project,
        version=2,
        name="scripted",
        kind="torchscript",
        label_order=LABELS,
        layer_names=["conv"],
        default_layer="conv",
    )
    login(page, world.scientist.username)
    page.goto(f"/projects/{world.project.pk}/rounds/new/")
    # The newest version (the TorchScript one) is preselected, with its best method.
    expect(page.get_by_label("Model version")).to_have_value(str(scripted.pk))
    assert "gradcam" not in _options(page)
    assert _options(page)[-1] == ""  # "None: show no saliency" stays
    expect(page.get_by_label("Saliency shown")).to_have_value("integrated_gradients")
    # Picking the architecture version brings Grad-CAM back, first.
    page.get_by_label("Model version").select_option(str(world.mv.pk))
    assert _options(page)[0] == "gradcam"
    expect(page.get_by_label("Saliency shown")).to_have_value("integrated_gradients")  # kept
    page.get_by_label("Model version").select_option(str(scripted.pk))
    assert "gradcam" not in _options(page)


def test_a_description_over_its_limit_is_counted_and_blocked(page, login, media_root):
    world = build_world(n=6, experts=2, with_files=True)
    login(page, world.scientist.username)
    page.goto(f"/projects/{world.project.pk}/rounds/new/")
    description = page.get_by_label("Description")
    description.fill("d" * 5001)
    expect(page.locator(".char-counter.over")).to_contain_text("5,001 / 5,000 characters")
    page.get_by_role("button", name="Create round").click()
    expect(description).to_be_focused()
    expect(description).to_have_value("d" * 5001)  # nothing cut
    assert not ReviewRound.objects.exists()
    description.fill("d" * 10)
    expect(page.locator("#id_description-counter")).to_have_text("10 / 5,000 characters")
