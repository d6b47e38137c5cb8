"""What schemathesis found the API answering against its own schema (issue 16, item 15):
fields the schema requires but a response leaves out, and input the schema forbids but the
API accepted. Each test here failed before its fix."""

from __future__ import annotations

import pytest
from drf_spectacular.generators import SchemaGenerator
from jsonschema_rs import validator_for

from annotations.services import reviews
from tests.annotations.review_fixtures import EXPECTATION, build_world, make_round

pytestmark = pytest.mark.django_db

CORRECT = {"prediction_verdict": "correct", "feature_verdict": "relevant"}


@pytest.fixture(scope="module")
def schema() -> dict:
    return SchemaGenerator().get_schema(request=None, public=True)


def _json_schema(node):
    """OpenAPI 3.0's ``nullable`` as JSON Schema's null type."""
    if isinstance(node, list):
        return [_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    converted = {k: _json_schema(v) for k, v in node.items() if k != "nullable"}
    if node.get("nullable"):
        return {"anyOf": [converted, {"type": "null"}]}
    return converted


def assert_conforms(schema: dict, path: str, method: str, response) -> None:
    """The response body validates against the schema of its status code."""
    documented = schema["paths"][path][method]["responses"][str(response.status_code)]
    body_schema = documented["content"]["application/json"]["schema"]
    full = _json_schema({"components": schema["components"], **body_schema})
    validator_for(full).validate(response.json())


@pytest.fixture
def world():
    return build_world(n=4, experts=1)


def test_an_experts_round_conforms_to_the_schema(world, schema) -> None:
    review_round = make_round(world)
    response = world.client(world.experts[0]).get(f"/api/rounds/{review_round.pk}/")
    assert response.status_code == 200
    assert "experts" not in response.json()
    assert_conforms(schema, "/api/rounds/{round_id}/", "get", response)
    listed = world.client(world.experts[0]).get(f"/api/projects/{world.project.pk}/rounds/")
    assert_conforms(schema, "/api/projects/{project_id}/rounds/", "get", listed)


def test_a_model_versions_detail_has_its_prediction_count(world, schema) -> None:
    response = world.client(world.scientist).get(f"/api/model-versions/{world.mv.pk}/")
    assert response.status_code == 200
    assert response.json()["prediction_count"] == 4
    assert_conforms(schema, "/api/model-versions/{model_version_id}/", "get", response)
    listed = world.client(world.scientist).get(f"/api/projects/{world.project.pk}/model-versions/")
    assert listed.json()["results"][0]["prediction_count"] == 4


@pytest.mark.parametrize(
    ("url", "query", "name"),
    [
        ("/api/datasets/{dataset}/instances/", {"split": ""}, "split"),
        ("/api/datasets/{dataset}/instances/", {"label": ""}, "label"),
        ("/api/projects/{project}/jobs/", {"status": ""}, "status"),
        ("/api/projects/{project}/model-versions/", {"kind": ""}, "kind"),
        ("/api/projects/{project}/rounds/", {"status": ""}, "status"),
        ("/api/model-versions/{mv}/predictions/", {"split": ""}, "split"),
        ("/api/model-versions/{mv}/predictions/", {"split": "nowhere"}, "split"),
        ("/api/reviews/", {"prediction_verdict": ""}, "prediction_verdict"),
        ("/api/reviews/", {"acceptable": ""}, "acceptable"),
        ("/api/reviews/", {"acceptable": "maybe"}, "acceptable"),
        ("/api/reviews/", {"round": str(2**63)}, "round"),
        ("/api/reviews/", {"instance": "1.5"}, "instance"),
        ("/api/reviews/", {"expert": "1e30"}, "expert"),
        ("/api/projects/", {"page": ""}, "page"),
        ("/api/projects/", {"page": "0"}, "page"),
        ("/api/projects/", {"page": "x"}, "page"),
        ("/api/projects/", {"page": "2"}, "page"),
        ("/api/projects/", {"page": "last"}, "page"),
        ("/api/rounds/{round}/reviews/", {"acceptable": ""}, "acceptable"),
        ("/api/rounds/{round}/reviews/", {"verdict": ""}, "verdict"),
        ("/api/rounds/{round}/reviews/", {"page": ""}, "page"),
        ("/api/rounds/{round}/reviews/", {"format": ""}, "format"),
        ("/api/rounds/{round}/reviews.csv", {"sort": ""}, "sort"),
    ],
)
def test_empty_and_unreadable_query_values_are_refused(world, url, query, name) -> None:
    review_round = make_round(world)
    dataset = world.instances[0].dataset_id
    path = url.format(
        dataset=dataset, project=world.project.pk, mv=world.mv.pk, round=review_round.pk
    )
    response = world.client(world.scientist).get(path, query)
    assert response.status_code == 400, (path, query, response.content)
    assert name in response.json()


def test_filters_and_pages_still_work(world) -> None:
    review_round = make_round(world)
    expert = world.experts[0]
    task = reviews.task_next(review_round=review_round, expert=expert)
    reviews.expectation_submit(task=task, expert=expert, data=EXPECTATION)
    reviews.verdict_submit(task=task, expert=expert, data=CORRECT)
    client = world.client(world.scientist)
    dataset = world.instances[0].dataset_id
    assert client.get(f"/api/datasets/{dataset}/instances/", {"split": "test"}).json()["count"] == 4
    assert client.get("/api/reviews/", {"acceptable": "true"}).json()["count"] == 0
    assert client.get("/api/reviews/", {"page": "1"}).json()["count"] == 1
    assert client.get("/api/reviews/", {"round": review_round.pk}).json()["count"] == 1
    assert client.get("/api/reviews/", {"round": 2**63 - 1}).json()["count"] == 0
    predictions = client.get(f"/api/model-versions/{world.mv.pk}/predictions/", {"split": "test"})
    assert predictions.json()["count"] == 4


def test_removing_a_member_with_an_empty_role_is_refused(world) -> None:
    client = world.client(world.scientist)
    url = f"/api/projects/{world.project.pk}/members/{world.viewer.username}/"
    response = client.delete(url + "?role=")
    assert response.status_code == 400
    assert "role" in response.json()
    assert world.project.memberships.filter(user=world.viewer).exists()


@pytest.mark.parametrize(
    ("url", "body", "name"),
    [
        ("/api/instances/{instance}/comments/", {"body": 12}, "body"),
        ("/api/instances/{instance}/comments/", {"body": "fine", "bdy": "x"}, "bdy"),
        ("/api/projects/", {"name": 12, "labels": ["a", "b"]}, "name"),
        ("/api/projects/", {"name": "p", "labels": [1, 2]}, "labels"),
        ("/api/tasks/{task}/skip", {"reason": True}, "reason"),
    ],
)
def test_numbers_are_not_taken_for_text(world, url, body, name) -> None:
    review_round = make_round(world)
    task = reviews.task_next(review_round=review_round, expert=world.experts[0])
    user = world.experts[0] if "tasks" in url else world.scientist
    path = url.format(instance=world.instances[0].pk, task=task.pk)
    response = world.client(user).post(path, body, format="json")
    assert response.status_code == 400, response.content
    assert name in response.json()


def test_answers_are_taken_as_json_only(world) -> None:
    """A form post arrived as an empty object: a review PATCH answered 200 having changed
    nothing. The answer endpoints take JSON alone (415 otherwise)."""
    review_round = make_round(world)
    expert = world.experts[0]
    task = reviews.task_next(review_round=review_round, expert=expert)
    reviews.expectation_submit(task=task, expert=expert, data=EXPECTATION)
    review = reviews.verdict_submit(task=task, expert=expert, data=CORRECT)
    client = world.client(expert)
    response = client.patch(f"/api/reviews/{review.pk}/", {"comment": "x"}, format="multipart")
    assert response.status_code == 415
    assert client.patch(f"/api/reviews/{review.pk}/", 5, format="json").status_code == 400
    edited = client.patch(f"/api/reviews/{review.pk}/", {"comment": "x"}, format="json")
    assert edited.status_code == 200
    assert edited.json()["comment"] == "x"
    other = reviews.task_next(review_round=review_round, expert=expert)
    for phase in ("expectation", "verdict"):
        url = f"/api/tasks/{other.pk}/{phase}"
        assert client.post(url, EXPECTATION, format="multipart").status_code == 415
    assert client.put(f"/api/tasks/{other.pk}/draft", {"a": "b"}).status_code == 415


def test_file_answers_document_their_media_types(schema) -> None:
    for path in (
        "/api/tasks/{task_id}/saliency/{kind}",
        "/api/explanations/{explanation_id}/{kind}/",
    ):
        content = schema["paths"][path]["get"]["responses"]["200"]["content"]
        assert {"image/png", "application/octet-stream"} <= set(content), path
    explanation_file = "/api/explanations/{explanation_id}/{kind}/"
    assert "image/webp" in schema["paths"][explanation_file]["get"]["responses"]["200"]["content"]
