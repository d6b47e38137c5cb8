"""The OpenAPI schema is generated without a single warning: every view has a serializer or an
explicit schema, path parameters have types, operation ids are unique. A warning means the
published schema (and the Swagger page) is wrong or guessed somewhere."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from django.core.management import call_command


def test_schema_generates_without_warnings(tmp_path: Path, capsys) -> None:
    target = tmp_path / "schema.yaml"
    try:
        call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target))
    except Exception as exc:  # SchemaGenerationError: the warnings are on stderr
        pytest.fail(f"schema generation warned or failed: {exc}\n{capsys.readouterr().err}")
    err = capsys.readouterr().err
    assert "Warning" not in err, err
    schema = yaml.safe_load(target.read_text())
    operation_ids = [op["operationId"] for item in schema["paths"].values() for op in item.values()]
    assert len(operation_ids) == len(set(operation_ids))
    assert "/api/reviews/{review_id}/" in schema["paths"]


# --- What the schema promises matches what the API answers (issue 16, item 15) -------------


@pytest.fixture(scope="module")
def schema() -> dict:
    from drf_spectacular.generators import SchemaGenerator

    return SchemaGenerator().get_schema(request=None, public=True)


def _operations(schema: dict):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def test_round_fields_left_out_for_experts_are_not_required(schema: dict) -> None:
    round_output = schema["components"]["schemas"]["RoundOutput"]
    for name in ("experts", "sampling", "sampling_counts"):
        assert name in round_output["properties"]
        assert name not in round_output["required"]
    assert "name" in round_output["required"]


def test_prediction_count_is_promised_and_given_on_every_model_version(schema: dict) -> None:
    assert "prediction_count" in schema["components"]["schemas"]["ModelVersionOutput"]["required"]


def test_every_operation_documents_its_errors(schema: dict) -> None:
    components = schema["components"]["schemas"]
    for path, method, operation in _operations(schema):
        responses = operation["responses"]
        label = f"{method.upper()} {path}"
        assert "401" in responses, label
        params = operation.get("parameters", [])
        if any(p["in"] == "path" for p in params):
            assert "404" in responses, label
        if "requestBody" in operation or any(p["in"] == "query" for p in params):
            assert "400" in responses, label
        if "requestBody" in operation:
            assert "415" in responses, label
        if path != "/api/auth/token/":
            assert "403" in responses, label
        for code, response in responses.items():
            if code.startswith("4"):
                ref = response["content"]["application/json"]["schema"]["$ref"]
                assert ref.rsplit("/", 1)[1] in components, (label, code)
    paths = schema["paths"]
    for path, method in [
        ("/api/tasks/{task_id}/heartbeat", "post"),
        ("/api/tasks/{task_id}/skip", "post"),
        ("/api/tasks/{task_id}/draft", "put"),
        ("/api/tasks/{task_id}/expectation", "post"),
        ("/api/tasks/{task_id}/verdict", "post"),
        ("/api/rounds/{round_id}/tasks/next", "post"),
        ("/api/reviews/{review_id}/", "patch"),
        ("/api/jobs/{job_id}/retry/", "post"),
    ]:
        assert "409" in paths[path][method]["responses"], (method, path)
    assert "422" in paths["/api/tasks/{task_id}/verdict"]["post"]["responses"]
    token = paths["/api/auth/token/"]["post"]["responses"]
    assert {"400", "429"} <= set(token)
    assert "Retry-After" in token["429"]["headers"]
    # The views that answer 204 say so.
    assert "204" in paths["/api/rounds/{round_id}/tasks/next"]["post"]["responses"]
    assert "204" in paths["/api/tasks/{task_id}/skip"]["post"]["responses"]


def test_pages_start_at_one_and_the_csv_path_takes_no_format(schema: dict) -> None:
    for path, _method, operation in _operations(schema):
        for parameter in operation.get("parameters", []):
            if parameter["in"] == "query" and parameter["name"] == "page":
                assert parameter["schema"] == {"type": "integer", "minimum": 1}, path
    csv = schema["paths"]["/api/rounds/{round_id}/reviews.csv"]["get"]
    assert "format" not in {p["name"] for p in csv["parameters"]}
