"""The blind-first matrix and the permission matrix: every endpoint that can return an
instance's model data, ground truth or reviews, by every role, own and other project."""

import pytest

from annotations.models import Role
from tests.annotations.review_fixtures import (
    EXPECTATION,
    VERDICT,
    add_saliency,
    build_world,
    make_round,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(media_root):
    world = build_world(with_files=True)
    add_saliency(world)
    return world


def data_endpoints(world, task, review_round) -> dict[str, str]:
    """Endpoints that could show the model's view, the ground truth or other reviews."""
    instance = task.instance
    exp = world.mv.explanations.get(instance=instance)
    return {
        "instance": f"/api/instances/{instance.pk}/",
        "instance-image": f"/api/instances/{instance.pk}/image/",
        "dataset-instances": f"/api/datasets/{instance.dataset_id}/instances/",
        "predictions": f"/api/model-versions/{world.mv.pk}/predictions/",
        "model-version": f"/api/model-versions/{world.mv.pk}/",
        "explanations": f"/api/model-versions/{world.mv.pk}/explanations/",
        "explanation": f"/api/explanations/{exp.pk}/",
        "explanation-raw": f"/api/explanations/{exp.pk}/raw/",
        "explanation-overlay": f"/api/explanations/{exp.pk}/overlay/",
        "round-export": f"/api/rounds/{review_round.pk}/export/",
    }


def test_blind_first_matrix(world):
    review_round = make_round(world, explanation_method="gradcam")
    alice = world.client(world.experts[0])
    task_id = alice.post(f"/api/rounds/{review_round.pk}/tasks/next").json()["id"]
    task = review_round.tasks.get(pk=task_id)

    # Before the expectation: the task shows the image and the questions, nothing else.
    payload = alice.get(f"/api/tasks/{task_id}/").json()
    assert not ({"prediction", "ground_truth", "saliency"} & set(payload))
    assert "true_label" not in str(payload)
    assert alice.get(f"/api/tasks/{task_id}/image").status_code == 200
    for kind in ("overlay", "raw"):
        assert alice.get(f"/api/tasks/{task_id}/saliency/{kind}").status_code == 403
    for name, url in data_endpoints(world, task, review_round).items():
        assert alice.get(url).status_code == 403, name
    # Other experts' reviews: a colleague's submitted review is not listed for alice.
    bob = world.client(world.experts[1])
    bob_task = bob.post(f"/api/rounds/{review_round.pk}/tasks/next").json()
    bob.post(f"/api/tasks/{bob_task['id']}/expectation", EXPECTATION, format="json")
    bob.post(f"/api/tasks/{bob_task['id']}/verdict", VERDICT, format="json")
    assert alice.get("/api/reviews/").json()["count"] == 0
    bob_review = bob.get("/api/reviews/").json()["results"][0]["id"]
    assert alice.get(f"/api/reviews/{bob_review}/").status_code == 404

    # After the expectation: the task reveals prediction, ground truth and saliency...
    revealed = alice.post(f"/api/tasks/{task_id}/expectation", EXPECTATION, format="json").json()
    assert revealed["prediction"]["label"]
    assert revealed["ground_truth"] == task.instance.label
    assert revealed["saliency"]["ready"] is True
    overlay = alice.get(revealed["saliency"]["overlay_url"])
    assert overlay.status_code == 200
    # ...but only through the task: the project-wide endpoints stay closed to experts.
    for name, url in data_endpoints(world, task, review_round).items():
        assert alice.get(url).status_code == 403, name


ROLES = ["scientist", "approver", "expert", "viewer", "stranger"]


def user_for(world, role):
    if role == "scientist":
        return world.scientist
    if role == "approver":
        return world.approver
    if role == "expert":
        return world.experts[0]
    if role == "viewer":
        return world.viewer
    from tests.factories import make_user

    return make_user(f"stranger-{world.project.slug}")


# Expected status for GET by role, per endpoint kind (expert: not their task / not revealed).
READ_MATRIX = {
    "project": {"scientist": 200, "approver": 200, "expert": 200, "viewer": 200, "stranger": 404},
    "rounds": {"scientist": 200, "approver": 200, "expert": 200, "viewer": 200, "stranger": 404},
    "round": {"scientist": 200, "approver": 200, "expert": 200, "viewer": 200, "stranger": 404},
    "progress": {"scientist": 200, "approver": 200, "expert": 200, "viewer": 200, "stranger": 404},
    "export": {"scientist": 200, "approver": 200, "expert": 403, "viewer": 403, "stranger": 404},
    "instance": {"scientist": 200, "approver": 200, "expert": 403, "viewer": 403, "stranger": 404},
    "predictions": {
        "scientist": 200,
        "approver": 200,
        "expert": 403,
        "viewer": 403,
        "stranger": 404,
    },
    "explanations": {
        "scientist": 200,
        "approver": 200,
        "expert": 403,
        "viewer": 403,
        "stranger": 404,
    },
    "task": {"scientist": 200, "approver": 200, "expert": 404, "viewer": 404, "stranger": 404},
    "review": {"scientist": 200, "approver": 200, "expert": 404, "viewer": 404, "stranger": 404},
    "jobs": {"scientist": 200, "approver": 200, "expert": 200, "viewer": 200, "stranger": 404},
}


@pytest.fixture
def two_projects(media_root):
    own = build_world(slug="own", with_files=True)
    other = build_world(slug="other", with_files=True)
    add_saliency(own)
    add_saliency(other)
    rounds = {}
    for world in (own, other):
        review_round = make_round(world)
        # The third expert of each project does one task, so there is a task and a review
        # that the matrix's users (experts[0]) do not own.
        helper = world.client(world.experts[2])
        task = helper.post(f"/api/rounds/{review_round.pk}/tasks/next").json()
        helper.post(f"/api/tasks/{task['id']}/expectation", EXPECTATION, format="json")
        helper.post(f"/api/tasks/{task['id']}/verdict", VERDICT, format="json")
        rounds[world.project.slug] = (review_round, task["id"])
    return own, other, rounds


def urls(world, review_round, task_id) -> dict[str, str]:
    review = review_round.reviews.get()
    instance = world.instances[0]
    return {
        "project": f"/api/projects/{world.project.pk}/",
        "rounds": f"/api/projects/{world.project.pk}/rounds/",
        "round": f"/api/rounds/{review_round.pk}/",
        "progress": f"/api/rounds/{review_round.pk}/progress/",
        "export": f"/api/rounds/{review_round.pk}/export/",
        "instance": f"/api/instances/{instance.pk}/",
        "predictions": f"/api/model-versions/{world.mv.pk}/predictions/",
        "explanations": f"/api/model-versions/{world.mv.pk}/explanations/",
        "task": f"/api/tasks/{task_id}/",
        "review": f"/api/reviews/{review.pk}/",
        "jobs": f"/api/projects/{world.project.pk}/jobs/",
    }


@pytest.mark.parametrize("role", ROLES)
def test_read_permission_matrix(two_projects, role):
    own, other, rounds = two_projects
    user = user_for(own, role)
    client = own.client(user)
    review_round, task_id = rounds["own"]
    for name, url in urls(own, review_round, task_id).items():
        assert client.get(url).status_code == READ_MATRIX[name][role], (name, role)
    # Nobody sees anything of the other project.
    review_round, task_id = rounds["other"]
    for name, url in urls(other, review_round, task_id).items():
        assert client.get(url).status_code == 404, (name, role, "other project")


@pytest.mark.parametrize("role", ROLES)
def test_write_permission_matrix(two_projects, role):
    own, _, rounds = two_projects
    client = own.client(user_for(own, role))
    review_round, task_id = rounds["own"]
    strategy = {"parts": [{"kind": "all_errors"}]}
    create = client.post(
        f"/api/projects/{own.project.pk}/rounds/",
        {
            "model_version": own.mv.pk,
            "name": "x",
            "sampling": strategy,
            "explanation_method": "",
            "experts": [own.experts[0].username],
        },
        format="json",
    )
    expected_manage = {
        "scientist": 201,
        "approver": 403,
        "expert": 403,
        "viewer": 403,
        "stranger": 404,
    }
    assert create.status_code == expected_manage[role]
    close = client.post(f"/api/rounds/{review_round.pk}/close/")
    assert close.status_code == {**expected_manage, "scientist": 200}[role]
    if role != "scientist":
        next_code = client.post(f"/api/rounds/{review_round.pk}/tasks/next").status_code
        assert next_code == {"approver": 403, "expert": 200, "viewer": 403, "stranger": 404}[role]
    # Only the task's own expert may act on it; for everyone else it does not exist.
    for path in ("expectation", "verdict"):
        assert client.post(f"/api/tasks/{task_id}/{path}", {}, format="json").status_code == 404


def test_project_of_another_is_invisible_in_lists(two_projects):
    own, _, _ = two_projects
    client = own.client(own.scientist)
    projects = {p["slug"] for p in client.get("/api/projects/").json()["results"]}
    assert projects == {"own"}
    reviews = client.get("/api/reviews/").json()["results"]
    assert {r["round"] for r in reviews} == set(own.project.rounds.values_list("pk", flat=True))
    assert Role.EXPERT in {m.role for m in own.project.memberships.all()}


def test_experts_do_not_learn_how_the_sample_was_drawn(world_for_sampling_check):
    """The sampling parts (e.g. confident errors) would prime a blind judgement."""
    world, review_round = world_for_sampling_check
    expert = world.client(world.experts[0])
    scientist = world.client(world.scientist)
    for path in (f"/api/rounds/{review_round.pk}/", f"/api/projects/{world.project.pk}/rounds/"):
        for client, hidden in ((expert, True), (scientist, False)):
            body = client.get(path).json()
            row = body["results"][0] if "results" in body else body
            assert ("sampling" not in row) is hidden, path
            assert ("sampling_counts" not in row) is hidden, path
            assert ("experts" not in row) is hidden, path
    expert.force_login(world.experts[0])
    scientist.force_login(world.scientist)
    page = expert.get(f"/rounds/{review_round.pk}/")
    assert page.status_code == 200
    assert b"Instances per sampling part" not in page.content
    assert b"Instances per sampling part" in scientist.get(f"/rounds/{review_round.pk}/").content


@pytest.fixture
def world_for_sampling_check(media_root):
    world = build_world()
    return world, make_round(world)
