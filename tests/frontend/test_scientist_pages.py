"""Scientist and approver pages through Django's test client: who may open each page, that
the forms call the services and show their errors next to the field while saving nothing,
round creation with the chosen parts, instance comments (page and API), the confusion matrix
against a hand count, and pinned query counts."""

from __future__ import annotations

import io
import re
from collections import Counter

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from annotations import analysis
from annotations.models import (
    Dataset,
    Explanation,
    Instance,
    InstanceComment,
    Job,
    ModelVersion,
    Prediction,
    ReviewRound,
    RoundStatus,
)
from annotations.services import reviews
from annotations.services.comments import COMMENT_MAX_LENGTH
from tests.annotations.review_fixtures import EXPECTATION, VERDICT, build_world, make_round
from tests.factories import LABELS, imagefolder_files, make_user, rooms_cnn_upload

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(media_root):
    return build_world(n=6, experts=2, with_files=True)


@pytest.fixture
def outsider():
    """A scientist of another project: must learn nothing about ``world`` (404)."""
    return build_world(n=1, experts=0, slug="cars").scientist


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def review_instance(world, instance, expert, expectation: dict, verdict: dict):
    """Submit a full review of ``instance`` by ``expert`` through the services, in a round
    of its own (so the expert is sure to be handed exactly this instance)."""
    review_round = reviews.round_create(
        model_version=world.mv,
        name=f"one-{instance.pk}-{expert.pk}",
        sampling_strategy={"parts": [{"kind": "ids", "ids": [instance.pk]}]},
        created_by=world.scientist,
        experts=[expert],
        explanation_method="",
    )
    task = reviews.task_next(review_round=review_round, expert=expert)
    reviews.expectation_submit(task=task, expert=expert, data=expectation)
    return reviews.verdict_submit(task=task, expert=expert, data=verdict)


# --- Access --------------------------------------------------------------------------------

ROLES = ["scientist", "approver", "expert", "viewer", "outsider"]
EXPECTED = {
    # page: status for scientist, approver, expert (of the round), viewer, other project's user
    "project": [200, 200, 200, 200, 404],
    "round-new": [200, 403, 403, 403, 404],
    "round": [200, 200, 200, 200, 404],
    "matrix": [200, 200, 403, 403, 404],
    "instance": [200, 200, 403, 403, 404],
    "readiness": [200, 200, 403, 403, 404],
}


def _url(page: str, world, review_round) -> str:
    return {
        "project": f"/projects/{world.project.pk}/",
        "round-new": f"/projects/{world.project.pk}/rounds/new/",
        "round": f"/rounds/{review_round.pk}/",
        "matrix": f"/model-versions/{world.mv.pk}/matrix/",
        "instance": f"/instances/{world.instances[0].pk}/",
        "readiness": f"/projects/{world.project.pk}/readiness/",
    }[page]


@pytest.mark.parametrize("page", list(EXPECTED))
def test_each_page_answers_each_role(world, outsider, page):
    review_round = make_round(world)
    users = {
        "scientist": world.scientist,
        "approver": world.approver,
        "expert": world.experts[0],
        "viewer": world.viewer,
        "outsider": outsider,
    }
    url = _url(page, world, review_round)
    got = [client_for(users[role]).get(url).status_code for role in ROLES]
    assert got == EXPECTED[page], dict(zip(ROLES, got, strict=True))
    anonymous = Client().get(url)
    assert anonymous.status_code == 302
    assert anonymous["Location"].startswith("/accounts/login/")


def test_an_expert_outside_the_round_gets_404(world):
    review_round = make_round(world)
    review_round.experts.remove(world.experts[1])
    assert client_for(world.experts[1]).get(f"/rounds/{review_round.pk}/").status_code == 404


def test_project_page_shows_forms_to_scientists_only(world):
    url = f"/projects/{world.project.pk}/"
    scientist = client_for(world.scientist).get(url).content.decode()
    assert 'name="action" value="import"' in scientist
    assert 'name="action" value="register"' in scientist
    assert f'href="/model-versions/{world.mv.pk}/matrix/"' in scientist
    approver = client_for(world.approver).get(url).content.decode()
    assert 'name="action"' not in approver
    assert "Model versions" in approver
    expert = client_for(world.experts[0]).get(url).content.decode()
    assert "Model versions" not in expert
    assert "Jobs" in expert
    # Writes are refused, not ignored, for a reader.
    response = client_for(world.approver).post(url, {"action": "compute"})
    assert response.status_code == 403


def test_project_page_lists_rounds_with_progress(world):
    review_round = make_round(world)
    expert = world.experts[0]
    task = reviews.task_next(review_round=review_round, expert=expert)
    reviews.expectation_submit(task=task, expert=expert, data=EXPECTATION)
    reviews.verdict_submit(task=task, expert=expert, data=VERDICT)
    html = client_for(world.scientist).get(f"/projects/{world.project.pk}/").content.decode()
    assert f'href="/rounds/{review_round.pk}/"' in html
    assert re.search(r'<progress max="6" value="1"[^>]*>', html)


# --- Project setup forms -------------------------------------------------------------------


def test_dataset_import_with_a_bad_archive_shows_the_error_and_saves_nothing(world):
    datasets, jobs = Dataset.objects.count(), Job.objects.count()
    upload = io.BytesIO(b"this is not a zip")
    upload.name = "data.zip"
    response = client_for(world.scientist).post(
        f"/projects/{world.project.pk}/",
        {"action": "import", "import-name": "more", "import-archive": upload},
    )
    assert response.status_code == 400
    html = response.content.decode()
    error = re.search(r'<ul class="errorlist" id="id_import-archive_error">(.*?)</ul>', html, re.S)
    assert error
    assert "zip" in error.group(1)
    assert 'value="more"' in html  # what was typed is kept
    assert (Dataset.objects.count(), Job.objects.count()) == (datasets, jobs)


def test_dataset_import_queues_a_job(world, image_zip):
    response = client_for(world.scientist).post(
        f"/projects/{world.project.pk}/",
        {
            "action": "import",
            "import-name": "more",
            "import-archive": image_zip(imagefolder_files(per_class=1)),
            "import-default_split": "test",
            "import-on_error": "reject",
        },
    )
    assert response.status_code == 302
    job = Job.objects.get(kind="import_dataset", dataset__name="more")
    assert job.params["default_split"] == "test"
    assert job.params["on_error"] == "reject"


def test_model_registration_with_an_unknown_architecture_saves_nothing(world):
    before = ModelVersion.objects.count()
    response = client_for(world.scientist).post(
        f"/projects/{world.project.pk}/",
        {
            "action": "register",
            "register-name": "v2",
            "register-kind": "architecture",
            "register-architecture": "no_such_net",
            "register-weights": rooms_cnn_upload(),
            "register-input_size": 24,
            "register-mean": "0.5, 0.5, 0.5",
            "register-std": "0.25, 0.25, 0.25",
        },
    )
    assert response.status_code == 400
    html = response.content.decode()
    error = re.search(r'id="id_register-architecture_error">(.*?)</ul>', html, re.S)
    assert error
    assert "no_such_net" in error.group(1)
    assert ModelVersion.objects.count() == before


def test_model_registration_registers_and_queues_predictions(world):
    response = client_for(world.scientist).post(
        f"/projects/{world.project.pk}/",
        {
            "action": "register",
            "register-name": "cnn v2",
            "register-kind": "architecture",
            "register-architecture": "rooms_cnn",
            "register-weights": rooms_cnn_upload(),
            "register-input_size": 24,
            "register-mean": "0.5, 0.5, 0.5",
            "register-std": "0.25, 0.25, 0.25",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    mv = ModelVersion.objects.get(project=world.project, name="cnn v2")
    assert mv.version == 2
    assert mv.mean == [0.5, 0.5, 0.5]
    assert Job.objects.filter(model_version=mv, kind="predict").exists()


def test_predictions_import_with_an_unknown_instance_saves_nothing(world):
    before = ModelVersion.objects.count()
    csv = io.BytesIO(b"instance_id,cat,dog,bird\n999999,0.2,0.3,0.5\n")
    csv.name = "probs.csv"
    response = client_for(world.scientist).post(
        f"/projects/{world.project.pk}/",
        {
            "action": "predictions",
            "predictions-name": "external",
            "predictions-predictions": csv,
            "predictions-input_size": 224,
            "predictions-mean": "0.485, 0.456, 0.406",
            "predictions-std": "0.229, 0.224, 0.225",
        },
    )
    assert response.status_code == 400
    assert re.search(r'id="id_predictions-predictions_error">.*999999', response.content.decode())
    assert ModelVersion.objects.count() == before


def test_compute_predictions_starts_a_job(world):
    url = f"/projects/{world.project.pk}/"
    response = client_for(world.scientist).post(
        url, {"action": "compute", "compute-model_version": world.mv.pk}
    )
    assert response.status_code == 302
    assert Job.objects.filter(model_version=world.mv, kind="predict").count() == 1
    bad = client_for(world.scientist).post(url, {"action": "compute", "compute-model_version": 0})
    assert bad.status_code == 400
    assert 'id="id_compute-model_version_error"' in bad.content.decode()
    assert Job.objects.filter(model_version=world.mv, kind="predict").count() == 1


# --- Round creation ------------------------------------------------------------------------


def round_post(world, parts: list[dict], **overrides) -> dict:
    data = {
        "name": "errors first",
        "model_version": world.mv.pk,
        "split": "test",
        "seed": 0,
        "overlap": 1,
        "experts": [u.pk for u in world.experts],
        "blind_first": "on",
        "explanation_method": "",
        "questions": ["expected_label", "prediction_verdict", "comment"],
        "part-TOTAL_FORMS": len(parts),
        "part-INITIAL_FORMS": 0,
        "part-MIN_NUM_FORMS": 0,
        "part-MAX_NUM_FORMS": 20,
        "action": "create",
    }
    for i, part in enumerate(parts):
        for key, value in part.items():
            data[f"part-{i}-{key}"] = value
    data.update(overrides)
    return data


def test_round_new_page_offers_the_projects_experts_and_a_default_strategy(world):
    html = client_for(world.scientist).get(f"/projects/{world.project.pk}/rounds/new/")
    html = html.content.decode()
    for expert in world.experts:
        assert expert.username in html
    assert world.viewer.username not in html
    assert 'name="part-0-kind"' in html
    assert f'data-preview-url="/api/projects/{world.project.pk}/rounds/preview/"' in html


def test_round_creation_through_the_page_uses_the_chosen_parts(world):
    parts = [
        {"kind": "confusion_quota", "per_cell": 1},
        {"kind": "control", "n": 2},
        {"kind": ""},  # an empty row is ignored
    ]
    response = client_for(world.scientist).post(
        f"/projects/{world.project.pk}/rounds/new/", round_post(world, parts)
    )
    assert response.status_code == 302
    review_round = ReviewRound.objects.get(name="errors first")
    assert response["Location"] == f"/rounds/{review_round.pk}/"
    assert [p["kind"] for p in review_round.sampling["parts"]] == ["confusion_quota", "control"]
    assert review_round.sampling["parts"][0]["per_cell"] == 1
    assert review_round.sampling["split"] == "test"
    # build_world has 3 errors, each in its own cell, and 3 correct predictions.
    assert review_round.sampling_counts["parts"] == {"confusion_quota": 3, "control": 2}
    assert review_round.tasks.count() == 5
    assert set(review_round.experts.all()) == set(world.experts)
    assert review_round.questions == ["expected_label", "prediction_verdict", "comment"]
    assert review_round.blind_first is True


def test_round_preview_button_shows_each_parts_counts(world):
    parts = [{"kind": "all_errors"}, {"kind": "lowest_confidence", "n": 4}]
    response = client_for(world.scientist).post(
        f"/projects/{world.project.pk}/rounds/new/", round_post(world, parts, action="preview")
    )
    assert response.status_code == 200
    html = response.content.decode()
    # lowest_confidence: all confidences are equal, so the first 4 by id, of which 2 are errors
    # all_errors took already.
    assert "Chooses 3, adds 3" in html
    assert "Chooses 4, adds 2" in html
    assert "<strong>5</strong> instances" in html
    assert not ReviewRound.objects.exists()


def test_a_bad_part_is_shown_on_its_field_and_nothing_is_created(world):
    parts = [{"kind": "all_errors"}, {"kind": ""}, {"kind": "confident_errors", "threshold": 2}]
    response = client_for(world.scientist).post(
        f"/projects/{world.project.pk}/rounds/new/", round_post(world, parts)
    )
    assert response.status_code == 400
    html = response.content.decode()
    # The sampler names parts[1] (the second non-empty part): the form row 2.
    error = re.search(r'id="id_part-2-threshold_error">(.*?)</ul>', html, re.S)
    assert error
    assert "(0, 1]" in error.group(1)
    assert not ReviewRound.objects.exists()


def test_round_settings_errors_are_named_and_nothing_is_created(world):
    response = client_for(world.scientist).post(
        f"/projects/{world.project.pk}/rounds/new/",
        round_post(world, [{"kind": "all_errors"}], overlap=50),
    )
    assert response.status_code == 400
    assert re.search(r'id="id_overlap_error">.*between 1 and 20', response.content.decode())
    empty = client_for(world.scientist).post(
        f"/projects/{world.project.pk}/rounds/new/", round_post(world, [{"kind": ""}])
    )
    assert empty.status_code == 400
    assert "at least one part" in empty.content.decode()
    assert not ReviewRound.objects.exists()


# --- Round progress ------------------------------------------------------------------------


def test_round_page_progress_and_close(world):
    review_round = make_round(world)
    expert = world.experts[0]
    task = reviews.task_next(review_round=review_round, expert=expert)
    reviews.expectation_submit(task=task, expert=expert, data=EXPECTATION)
    reviews.verdict_submit(task=task, expert=expert, data=VERDICT)
    reviews.task_next(review_round=review_round, expert=world.experts[1])

    html = client_for(world.scientist).get(f"/rounds/{review_round.pk}/").content.decode()
    assert '<dd data-progress="submitted">1</dd>' in html
    assert '<dd data-progress="in_progress">1</dd>' in html
    assert '<dd data-progress="open">4</dd>' in html
    assert world.experts[1].username in html
    assert 'value="close"' in html

    # An expert sees the figures and their own row only, as the progress API shows them.
    mine = client_for(expert).get(f"/rounds/{review_round.pk}/").content.decode()
    assert '<dd data-progress="submitted">1</dd>' in mine
    assert expert.username in mine
    assert world.experts[1].username not in mine
    assert 'value="close"' not in mine

    url = f"/rounds/{review_round.pk}/"
    assert client_for(world.approver).post(url, {"action": "close"}).status_code == 403
    assert client_for(world.scientist).post(url, {"action": "close"}).status_code == 302
    review_round.refresh_from_db()
    assert review_round.status == RoundStatus.CLOSED


# --- Confusion matrix ----------------------------------------------------------------------


def hand_count(world, split: str | None = "test") -> Counter:
    """The confusion counts by a plain loop over instances and their predictions."""
    counts: Counter = Counter()
    for instance in Instance.objects.filter(project=world.project):
        if not instance.label or (split and instance.split != split):
            continue
        for prediction in Prediction.objects.filter(instance=instance, model_version=world.mv):
            counts[(instance.label, prediction.label)] += 1
    return counts


def add_instance(world, label: str, predicted: str, split: str) -> Instance:
    n = Instance.objects.count()
    instance = Instance.objects.create(
        project=world.project,
        dataset=world.instances[0].dataset,
        image=world.instances[0].image.name,
        width=32,
        height=32,
        label=label,
        split=split,
        content_hash=f"extra-{n}",
    )
    probs = [0.1, 0.1, 0.1]
    probs[LABELS.index(predicted)] = 0.8
    Prediction.objects.create(
        instance=instance,
        model_version=world.mv,
        probabilities=probs,
        label=predicted,
        confidence=0.8,
    )
    return instance


def test_confusion_matrix_equals_a_hand_count(world):
    add_instance(world, "cat", "bird", "train")  # outside the test split
    add_instance(world, "", "dog", "test")  # unlabelled: no true label to count
    matrix = analysis.confusion_matrix(model_version=world.mv, split="test")
    expected = hand_count(world, "test")
    # build_world: cat->cat, dog->bird, bird->bird, cat->dog, dog->dog, bird->cat.
    assert expected == Counter(
        {
            ("cat", "cat"): 1,
            ("dog", "bird"): 1,
            ("bird", "bird"): 1,
            ("cat", "dog"): 1,
            ("dog", "dog"): 1,
            ("bird", "cat"): 1,
        }
    )
    assert matrix.labels == LABELS
    assert {k: v for k, v in matrix.counts.items() if v} == dict(expected)
    assert (matrix.total, matrix.correct) == (6, 3)
    everything = analysis.confusion_matrix(model_version=world.mv)
    assert dict(everything.counts) == dict(hand_count(world, None))
    assert everything.count("cat", "bird") == 1


def test_matrix_page_shows_counts_and_a_cell_shows_its_instances(world):
    add_instance(world, "dog", "bird", "test")
    dog_bird = [world.instances[1].pk, Instance.objects.order_by("-id").first().pk]
    exp = Explanation.objects.create(
        instance_id=dog_bird[0], model_version=world.mv, method="gradcam", target="bird"
    )
    client = client_for(world.approver)
    html = client.get(f"/model-versions/{world.mv.pk}/matrix/").content.decode()
    link = re.search(
        r'<a href="\?split=test&amp;true=dog&amp;pred=bird#cell"[^>]*>.*?'
        r'<span class="count">(\d+)</span> <span class="share">(\d+)%',
        html,
        re.S,
    )
    assert link
    assert link.groups() == ("2", "67")
    assert 'id="cell"' not in html

    html = client.get(
        f"/model-versions/{world.mv.pk}/matrix/", {"true": "dog", "pred": "bird"}
    ).content.decode()
    # Each links to the instance page inside this cell's list (previous / next).
    shown = [int(i) for i in re.findall(r'href="/instances/(\d+)/\?from=cell&amp;', html)]
    assert sorted(shown) == sorted(dog_bird)
    assert f"/api/explanations/{exp.pk}/thumbnail/" in html
    assert f'src="/api/instances/{dog_bird[1]}/image/"' in html
    assert html.count("no saliency yet") == 1


def test_matrix_split_selector(world):
    add_instance(world, "cat", "bird", "train")
    client = client_for(world.scientist)
    train = client.get(f"/model-versions/{world.mv.pk}/matrix/", {"split": "train"})
    assert "1 labelled instance," in train.content.decode()
    everything = client.get(f"/model-versions/{world.mv.pk}/matrix/", {"split": "all"})
    assert "7 labelled instances" in everything.content.decode()


def test_matrix_page_query_count_does_not_grow_with_the_data(world, django_assert_max_num_queries):
    for i in range(60):
        instance = add_instance(world, "dog", "bird", "test")
        if i % 2:
            Explanation.objects.create(
                instance=instance, model_version=world.mv, method="gradcam", target="bird"
            )
    client = client_for(world.scientist)
    url = f"/model-versions/{world.mv.pk}/matrix/"
    # session, user, access check (model version + project, roles), navigation (roles,
    # projects), the matrix, and the cell's count and page; for a scientist the compute
    # form's role check and the cell's instance ids.
    with django_assert_max_num_queries(11):
        response = client.get(url, {"true": "dog", "pred": "bird"})
    assert response.status_code == 200
    assert response.content.decode().count('href="/instances/') == 48
    with django_assert_max_num_queries(7):
        client.get(url)


def test_project_and_round_pages_query_counts(world, django_assert_max_num_queries):
    review_round = make_round(world)
    for expert in world.experts:
        task = reviews.task_next(review_round=review_round, expert=expert)
        reviews.expectation_submit(task=task, expert=expert, data=EXPECTATION)
        reviews.verdict_submit(task=task, expert=expert, data=VERDICT)
    make_round(world)
    client = client_for(world.scientist)
    # Versions' accuracy summaries, rounds, jobs, coverage and the forms' choices are one
    # query each, however many there are: three more model versions cost nothing.
    with django_assert_max_num_queries(15):
        assert client.get(f"/projects/{world.project.pk}/").status_code == 200
    with CaptureQueriesContext(connection) as readiness_one:
        assert client.get(f"/projects/{world.project.pk}/readiness/").status_code == 200
    for version in (2, 3, 4):
        ModelVersion.objects.create(
            project=world.project,
            version=version,
            name=f"m{version}",
            kind="predictions_only",
            label_order=world.mv.label_order,
        )
    with django_assert_max_num_queries(15):
        assert client.get(f"/projects/{world.project.pk}/").status_code == 200
    with CaptureQueriesContext(connection) as readiness_four:
        assert client.get(f"/projects/{world.project.pk}/readiness/").status_code == 200
    assert len(readiness_four) == len(readiness_one)
    # 20: the submitted-reviews table adds its count and its rows (one query, whatever the
    # page holds; see tests/frontend/test_round_reviews.py).
    with django_assert_max_num_queries(20):
        assert client.get(f"/rounds/{review_round.pk}/").status_code == 200


# --- Instance page and comments ------------------------------------------------------------


def test_instance_page_shows_reviews_regions_and_disagreements(world):
    instance = world.instances[1]  # dog, predicted bird
    review_instance(world, instance, world.experts[0], EXPECTATION, VERDICT)  # expects cat
    review_instance(
        world,
        instance,
        world.experts[1],
        EXPECTATION | {"expected_label": "dog", "evidence": []},
        VERDICT
        | {"prediction_verdict": "correct", "severity": None, "acceptable": None, "reason": ""},
    )
    html = client_for(world.scientist).get(f"/instances/{instance.pk}/").content.decode()
    assert "Ground truth" in html
    assert "dog" in html
    assert world.experts[0].username in html
    assert world.experts[1].username in html
    assert "Rare case" in html
    assert "odd" in html
    assert '<rect x="1" y="1" width="9" height="11"' in html
    assert "Expert vs model" in html
    assert "Expected labels differ: cat (pets-expert0); dog (pets-expert1)." in html
    assert "Experts&#x27; verdicts on v1 differ" in html


def test_instance_page_query_count(world, django_assert_max_num_queries):
    instance = world.instances[1]
    for expert in world.experts:
        review_instance(world, instance, expert, EXPECTATION, VERDICT)
    for k in range(5):
        InstanceComment.objects.create(instance=instance, author=world.scientist, body=f"c{k}")
    client = client_for(world.scientist)
    # +1 for the instance's saliency maps (the overlay and its chooser).
    with django_assert_max_num_queries(12):
        response = client.get(f"/instances/{instance.pk}/")
    assert response.content.decode().count('class="body"') == 5


def test_comment_through_the_page(world):
    instance = world.instances[0]
    client = client_for(world.approver)
    url = f"/instances/{instance.pk}/"
    response = client.post(url, {"body": "  Looks like the stool again.  "})
    assert response.status_code == 302
    comment = InstanceComment.objects.get()
    assert (comment.body, comment.author) == ("Looks like the stool again.", world.approver)
    assert "Looks like the stool again." in client.get(url).content.decode()

    for bad in ("   ", "x" * (COMMENT_MAX_LENGTH + 1)):
        response = client.post(url, {"body": bad})
        assert response.status_code == 400
        assert 'id="id_body_error"' in response.content.decode()
    assert InstanceComment.objects.count() == 1
    assert client_for(world.experts[0]).post(url, {"body": "hi"}).status_code == 403


def test_comment_api(world, outsider):
    from rest_framework.test import APIClient

    instance = world.instances[0]
    url = f"/api/instances/{instance.pk}/comments/"
    client = APIClient()
    client.force_authenticate(world.scientist)
    response = client.post(url, {"body": "first"}, format="json")
    assert response.status_code == 201
    assert response.json()["author"] == world.scientist.username
    listed = client.get(url).json()
    assert listed["count"] == 1
    assert listed["results"][0]["body"] == "first"

    bad = client.post(url, {"body": ""}, format="json")
    assert bad.status_code == 400
    assert "body" in bad.json()
    too_long = client.post(url, {"body": "x" * (COMMENT_MAX_LENGTH + 1)}, format="json")
    assert too_long.status_code == 400
    assert "body" in too_long.json()
    assert InstanceComment.objects.count() == 1

    for user, status in ((world.experts[0], 403), (world.viewer, 403), (outsider, 404)):
        other = APIClient()
        other.force_authenticate(user)
        assert other.get(url).status_code == status
        assert other.post(url, {"body": "x"}, format="json").status_code == status


# --- Readiness -----------------------------------------------------------------------------


def test_readiness_shows_coverage_and_accuracy(world):
    review_round = make_round(world)
    expert = world.experts[0]
    task = reviews.task_next(review_round=review_round, expert=expert)
    reviews.expectation_submit(task=task, expert=expert, data=EXPECTATION)
    reviews.verdict_submit(task=task, expert=expert, data=VERDICT)
    html = client_for(world.approver).get(f"/projects/{world.project.pk}/readiness/")
    html = html.content.decode()
    assert "1 of 6 sampled instances reviewed (17%)" in html
    assert "0.500" in html  # test accuracy: 3 of 6
    assert html.count("coming with the readiness issue") == 2


def test_an_unknown_user_sees_no_page():
    make_user("nobody")
    client = client_for(make_user("lonely"))
    assert client.get("/projects/999999/").status_code == 404
    assert client.get("/instances/999999/").status_code == 404
