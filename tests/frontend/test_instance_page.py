"""The instance page through Django's test client: the saliency overlay and its controls,
every expert's regions in that expert's colour, alignment scores, tags, previous / next in
a matrix cell and in a round's reviews (only for lists the user may read), computing a map
from the page, and renderings of an older rendering version drawn again."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.test import Client

from annotations import instance_navigation
from annotations.models import Explanation, Instance, Job, ModelVersion, Prediction
from annotations.services import explanations, reviews
from explain_worker import rendering
from tests.annotations.review_fixtures import EXPECTATION, add_explanation, build_world
from tests.factories import LABELS

pytestmark = pytest.mark.django_db

CORRECT = {"prediction_verdict": "correct", "feature_verdict": "relevant"}


@pytest.fixture
def world(media_root):
    return build_world(n=6, experts=3, with_files=True)


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def review(world, instance, expert, expectation: dict, *, name: str = "", method: str = ""):
    """A full review of ``instance`` by ``expert`` in a round of its own."""
    review_round = reviews.round_create(
        model_version=world.mv,
        name=name or f"one-{instance.pk}-{expert.pk}",
        sampling_strategy={"parts": [{"kind": "ids", "ids": [instance.pk]}]},
        created_by=world.scientist,
        experts=[expert],
        explanation_method="",
    )
    task = reviews.task_next(review_round=review_round, expert=expert)
    reviews.expectation_submit(task=task, expert=expert, data=expectation)
    return reviews.verdict_submit(task=task, expert=expert, data=CORRECT)


def add_instance(world, label: str, predicted: str, confidence: float) -> Instance:
    n = Instance.objects.count()
    instance = Instance.objects.create(
        project=world.project,
        dataset=world.instances[0].dataset,
        image=world.instances[0].image.name,
        width=32,
        height=32,
        label=label,
        split="test",
        content_hash=f"extra-{n}",
    )
    probs = [0.05, 0.05, 0.05]
    probs[LABELS.index(predicted)] = confidence
    Prediction.objects.create(
        instance=instance,
        model_version=world.mv,
        probabilities=probs,
        label=predicted,
        confidence=confidence,
    )
    return instance


def blob(top_left: bool = True) -> np.ndarray:
    values = np.zeros((32, 32), dtype=np.float32)
    if top_left:
        values[:12, :12] = 1.0
    else:
        values[20:, 20:] = 1.0
    return values


# --- Overlay ---------------------------------------------------------------------------------


def test_the_overlay_is_drawn_over_the_image_with_toggle_and_opacity(world):
    instance = world.instances[1]  # dog, predicted bird
    exp = add_explanation(world, instance, blob())
    html = client_for(world.scientist).get(f"/instances/{instance.pk}/").content.decode()
    overlay = re.search(r'<img class="saliency-overlay" data-overlay src="([^"]+)"[^>]*>', html)
    assert overlay
    assert overlay.group(1) == f"/api/explanations/{exp.pk}/overlay/"
    assert f'data-legend-height="{rendering.LEGEND_HEIGHT}"' in overlay.group(0)
    # Inside the image's stage, under the regions.
    stage = html[html.index("data-stage") : html.index("</figure>")]
    assert "data-overlay " in stage
    assert re.search(r'<button type="button" aria-pressed="true" data-overlay-toggle>', html)
    assert re.search(r'<input type="range" min="0" max="100"[^>]*data-overlay-opacity', html)
    assert "v1 · Grad-CAM · for bird" in html
    # The keys are listed on the page.
    keys = html[html.index('id="keys-h"') :]
    for key in ("<kbd>v</kbd>", "<kbd>[</kbd>", "<kbd>]</kbd>"):
        assert key in keys
    # The overlay file is served, with the legend strip the page crops.
    response = client_for(world.scientist).get(overlay.group(1))
    assert response.status_code == 200


def test_without_a_map_the_page_says_so_and_offers_to_compute_one(world):
    instance = world.instances[1]
    html = client_for(world.approver).get(f"/instances/{instance.pk}/").content.decode()
    assert "data-overlay " not in html
    assert "No saliency map of this instance yet" in html
    form = html[
        html.index("data-saliency-compute") : html.index(
            "</form>", html.index("data-saliency-compute")
        )
    ]
    # Only methods this version can compute (an architecture model with a layer: all four).
    assert re.findall(r'<option value="([a-z_]+)">', form)[:4] == [
        "gradcam",
        "integrated_gradients",
        "saliency",
        "occlusion",
    ]
    # Why P and not Q: Q defaults to the ground truth.
    assert re.search(r'<option value="dog" selected>dog \(ground truth\)</option>', form)


def test_a_torchscript_version_offers_no_gradcam_and_predictions_only_nothing(world):
    instance = world.instances[1]
    ModelVersion.objects.filter(pk=world.mv.pk).update(kind="torchscript")
    html = client_for(world.scientist).get(f"/instances/{instance.pk}/").content.decode()
    form = html[html.index("data-saliency-compute") :]
    assert 'data-methods="integrated_gradients,saliency,occlusion"' in form
    ModelVersion.objects.filter(pk=world.mv.pk).update(kind="predictions_only")
    html = client_for(world.scientist).get(f"/instances/{instance.pk}/").content.decode()
    assert "data-saliency-compute" not in html


def test_the_page_computes_a_map_for_another_class(world):
    instance = world.instances[1]  # dog, predicted bird: why bird and not dog?
    client = client_for(world.approver)
    url = f"/instances/{instance.pk}/?from=cell&model_version={world.mv.pk}&true=dog&predicted=bird"
    response = client.post(
        url,
        {
            "action": "explain",
            "model_version": world.mv.pk,
            "method": "saliency",
            "explain": "other",
            "target": "dog",
        },
    )
    assert response.status_code == 302
    job = Job.objects.get(kind="explain")
    assert job.params["target"] == "dog"
    assert job.params["instance_ids"] == [instance.pk]
    assert job.params["method"] == "saliency"
    # Back to the same page in the same list.
    assert response["Location"].startswith(f"/instances/{instance.pk}/?from=cell")
    # Once the map exists, asking again shows it.
    exp = add_explanation(world, instance, blob(), method="saliency")
    Explanation.objects.filter(pk=exp.pk).update(target="dog")
    response = client.post(
        url,
        {
            "action": "explain",
            "model_version": world.mv.pk,
            "method": "saliency",
            "explain": "other",
            "target": "dog",
        },
    )
    assert f"overlay={exp.pk}" in response["Location"]
    html = client.get(response["Location"]).content.decode()
    assert f'src="/api/explanations/{exp.pk}/overlay/"' in html
    assert "v1 · Saliency (input gradient) · for dog" in html


def test_an_older_rendering_is_drawn_again(world):
    instance = world.instances[1]
    exp = add_explanation(world, instance, blob())
    old_name = exp.raw.name.rsplit(".", 1)[0] + ".overlay.png"  # as version 1 named it
    default_storage.save(old_name, ContentFile(b"old png"))
    Explanation.objects.filter(pk=exp.pk).update(overlay=old_name)
    response = client_for(world.scientist).get(f"/api/explanations/{exp.pk}/overlay/")
    assert response.status_code == 200
    assert b"".join(response.streaming_content)[:8] == b"\x89PNG\r\n\x1a\n"
    exp.refresh_from_db()
    assert exp.overlay.name.endswith(rendering.rendering_suffix("overlay"))
    assert not default_storage.exists(old_name)
    # The current one is kept as it is.
    again = explanations.explanation_rendering(explanation=exp, kind="overlay")
    assert again == exp.overlay.name


# --- Regions, alignment, tags ----------------------------------------------------------------


def test_each_expert_s_regions_in_their_colour_with_a_legend(world):
    instance = world.instances[1]
    a, b, c = world.experts
    review(
        world,
        instance,
        a,
        EXPECTATION | {"evidence": [{"type": "box", "points": [[1, 1], [10, 12]]}]},
    )
    review(
        world,
        instance,
        b,
        EXPECTATION | {"evidence": [{"type": "polygon", "points": [[20, 20], [30, 20], [25, 30]]}]},
    )
    review(world, instance, c, EXPECTATION | {"evidence": []})
    # The same expert again, in another round: the same colour.
    review(
        world,
        instance,
        a,
        EXPECTATION | {"evidence": [{"type": "box", "points": [[2, 2], [5, 5]]}]},
        name="again",
    )
    html = client_for(world.scientist).get(f"/instances/{instance.pk}/").content.decode()
    strokes = dict(re.findall(r'stroke="(#[0-9a-f]{6})" data-expert="([^"]+)"', html)[::-1])
    by_expert = {}
    for colour, expert in re.findall(r'stroke="(#[0-9a-f]{6})" data-expert="([^"]+)"', html):
        by_expert.setdefault(expert, set()).add(colour)
    assert set(by_expert) == {a.username, b.username}
    assert all(len(colours) == 1 for colours in by_expert.values())
    assert by_expert[a.username] != by_expert[b.username]
    assert len(strokes) == 2
    legend = html[
        html.index("data-region-legend") : html.index("</p>", html.index("data-region-legend"))
    ]
    for expert in (a, b):
        (colour,) = by_expert[expert.username]
        assert re.search(rf'fill="{colour}"/></svg> {expert.username}', legend)
    assert c.username not in legend  # drew nothing


def test_alignment_scores_and_tags_of_each_review(world):
    instance = world.instances[1]  # 32 x 32, predicted bird
    add_explanation(world, instance, blob())  # the top-left 12 x 12 cells
    box = {"type": "box", "points": [[0, 0], [11.9, 11.9]]}
    review(
        world,
        instance,
        world.experts[0],
        EXPECTATION | {"evidence": [box], "concepts": ["fur"], "free_tags": ["whiskers", "blurry"]},
    )
    review(
        world,
        instance,
        world.experts[1],
        EXPECTATION | {"evidence": [], "concepts": [], "free_tags": []},
    )
    html = client_for(world.scientist).get(f"/instances/{instance.pk}/").content.decode()
    rows = re.findall(r"<tr>\s*<th scope=\"row\">(.*?)</tr>", html, re.S)
    first = next(r for r in rows if r.startswith(world.experts[0].username))
    second = next(r for r in rows if r.startswith(world.experts[1].username))
    expected = explanations.evidence_alignment(
        explanation=Explanation.objects.get(instance=instance),
        regions=[box],
        width=32,
        height=32,
    )
    assert expected is not None
    text = (
        f"IoU {expected['iou']:.2f} · GT cov. {expected['ground_truth_coverage']:.2f}"
        f" · sal. cov. {expected['saliency_coverage']:.2f}"
    )
    assert text in first
    assert "v1 · Grad-CAM · for bird" in first
    assert '<span class="tag">fur</span>' in first
    assert '<span class="tag tag-free">whiskers</span>' in first
    assert '<span class="tag tag-free">blurry</span>' in first
    assert "IoU" not in second
    assert '<span class="tag' not in second


# --- Previous / next -------------------------------------------------------------------------


def _nav(html: str) -> dict[str, str | None]:
    prev = re.search(r'<a href="([^"]+)" rel="prev"', html)
    nxt = re.search(r'<a href="([^"]+)" rel="next"', html)
    where = re.search(r'<span class="nav-where">(\d+) of (\d+) in', html)
    return {
        "prev": prev.group(1).replace("&amp;", "&") if prev else None,
        "next": nxt.group(1).replace("&amp;", "&") if nxt else None,
        "where": f"{where.group(1)}/{where.group(2)}" if where else None,
    }


def _id(url: str) -> int:
    return int(re.match(r"/instances/(\d+)/", url).group(1))


def test_previous_and_next_within_a_matrix_cell(world):
    # dog predicted as bird: the fixture's instance (0.8) and three more.
    high = add_instance(world, "dog", "bird", 0.95)
    low = add_instance(world, "dog", "bird", 0.5)
    add_instance(world, "dog", "bird", 0.7)
    middle = world.instances[1]
    client = client_for(world.approver)
    cell = f"from=cell&model_version={world.mv.pk}&true=dog&predicted=bird&split=test"
    # The cell page's links carry the list.
    matrix = client.get(
        f"/model-versions/{world.mv.pk}/matrix/", {"true": "dog", "pred": "bird"}
    ).content.decode()
    links = re.findall(r'href="(/instances/\d+/\?[^"]+)"', matrix)
    assert [_id(u) for u in links][:1] == [high.pk]  # most confident first
    assert all(parse_qs(urlsplit(u.replace("&amp;", "&")).query) == parse_qs(cell) for u in links)

    html = client.get(f"/instances/{middle.pk}/?{cell}").content.decode()
    nav = _nav(html)
    assert nav["where"] == "2/4"
    back = f"/model-versions/{world.mv.pk}/matrix/?split=test&amp;true=dog&amp;pred=bird#cell"
    assert f'<a href="{back}">v1: true dog, predicted bird</a>' in html
    assert _id(nav["prev"]) == high.pk
    assert parse_qs(urlsplit(nav["next"]).query) == parse_qs(cell)
    # Walk to the end and back.
    nav = _nav(client.get(nav["next"]).content.decode())
    assert nav["where"] == "3/4"
    nav = _nav(client.get(nav["next"]).content.decode())
    assert nav["where"] == "4/4"
    assert nav["next"] is None
    assert _id(nav["prev"]) != low.pk
    first = _nav(client.get(f"/instances/{high.pk}/?{cell}").content.decode())
    assert first["prev"] is None
    assert first["where"] == "1/4"
    # The keys are listed.
    html = client.get(f"/instances/{high.pk}/?{cell}").content.decode()
    assert "<kbd>j</kbd> <kbd>k</kbd>" in html[html.index('id="keys-h"') :]


def test_previous_and_next_within_a_round_s_reviews(world):
    a, b, _ = world.experts
    review_round = reviews.round_create(
        model_version=world.mv,
        name="all six",
        sampling_strategy={"parts": [{"kind": "ids", "ids": [i.pk for i in world.instances]}]},
        created_by=world.scientist,
        experts=[a, b],
        explanation_method="",
    )
    submitted = {a.pk: [], b.pk: []}
    for _ in range(3):
        for expert in (a, b):
            task = reviews.task_next(review_round=review_round, expert=expert)
            reviews.expectation_submit(
                task=task, expert=expert, data=EXPECTATION | {"evidence": []}
            )
            reviews.verdict_submit(task=task, expert=expert, data=CORRECT)
            submitted[expert.pk].append(task.instance_id)
    client = client_for(world.scientist)
    params = {"from": "round", "round": str(review_round.pk), "sort": "instance"}
    listed = instance_navigation.instance_list(world.scientist, params)
    assert listed is not None
    assert listed.ids == sorted(set(submitted[a.pk] + submitted[b.pk]))
    second = listed.ids[1]
    html = client.get(f"/instances/{second}/", params).content.decode()
    nav = _nav(html)
    assert nav["where"] == f"2/{len(listed.ids)}"
    # A link back to the table, with its sort.
    assert (
        f'<a href="/rounds/{review_round.pk}/?sort=instance#reviews">reviews of round all six</a>'
        in html
    )
    assert _id(nav["prev"]) == listed.ids[0]
    assert _id(nav["next"]) == listed.ids[2]
    assert parse_qs(urlsplit(nav["next"]).query) == {k: [v] for k, v in params.items()}
    # A filter narrows the list: one expert's reviews only.
    only_a = params | {"expert": a.username}
    ids_a = sorted(submitted[a.pk])
    nav = _nav(client.get(f"/instances/{ids_a[0]}/", only_a).content.decode())
    assert nav["where"] == f"1/{len(ids_a)}"
    assert _id(nav["next"]) == ids_a[1]
    assert "expert=" in nav["next"]
    # A bad filter names no list: no navigation, the page still opens.
    response = client.get(f"/instances/{ids_a[0]}/", params | {"verdict": "nonsense"})
    assert response.status_code == 200
    assert _nav(response.content.decode())["where"] is None


def test_lists_a_user_may_not_read_give_no_navigation(world):
    other = build_world(n=3, experts=1, slug="cars", with_files=False)
    instance = world.instances[1]
    foreign_cell = f"from=cell&model_version={other.mv.pk}&true=cat&predicted=cat&split=test"
    html = client_for(world.scientist).get(f"/instances/{instance.pk}/?{foreign_cell}")
    assert html.status_code == 200
    assert _nav(html.content.decode())["where"] is None
    foreign_round = reviews.round_create(
        model_version=other.mv,
        name="theirs",
        sampling_strategy={"parts": [{"kind": "ids", "ids": [i.pk for i in other.instances]}]},
        created_by=other.scientist,
        experts=other.experts,
        explanation_method="",
    )
    assert (
        instance_navigation.instance_list(
            world.scientist, {"from": "round", "round": str(foreign_round.pk)}
        )
        is None
    )
    assert (
        instance_navigation.neighbours(
            world.scientist,
            {"from": "cell", "model_version": str(other.mv.pk), "true": "cat", "predicted": "cat"},
            instance.pk,
        )
        == instance_navigation.NO_LIST
    )
    # An expert of the round reads neither the list nor the page.
    expert = world.experts[0]
    round_of_expert = reviews.round_create(
        model_version=world.mv,
        name="mine",
        sampling_strategy={"parts": [{"kind": "ids", "ids": [instance.pk]}]},
        created_by=world.scientist,
        experts=[expert],
        explanation_method="",
    )
    params = {"from": "round", "round": str(round_of_expert.pk)}
    assert instance_navigation.instance_list(expert, params) is None
    cell = {"from": "cell", "model_version": str(world.mv.pk), "true": "dog", "predicted": "bird"}
    assert instance_navigation.instance_list(expert, cell) is None
    assert instance_navigation.instance_list(world.viewer, cell) is None
    for user in (expert, world.viewer):
        response = client_for(user).get(f"/instances/{instance.pk}/", cell)
        assert response.status_code == 403
    # Unknown or malformed lists: none.
    for params in (
        {},
        {"from": "elsewhere"},
        {"from": "cell", "model_version": "x"},
        {"from": "cell", "model_version": "\u00b2", "true": "dog", "predicted": "bird"},
        {"from": "round", "round": "\u00b2"},
        {"from": "round", "round": "999999"},
    ):
        assert instance_navigation.instance_list(world.scientist, params) is None
    # A malformed id in the page's own parameters is no error either.
    response = client_for(world.scientist).get(
        f"/instances/{instance.pk}/", {"from": "cell", "model_version": "\u00b2"}
    )
    assert response.status_code == 200
