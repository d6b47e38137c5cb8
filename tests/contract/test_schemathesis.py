"""A small schemathesis pass in ``make test``: the expert (the role a blind-first round hides
the most from) against pytest-django's live server, every check, a fixed seed. The full run,
four roles and thousands of requests each against gunicorn, is
``scripts/schemathesis_run.py`` (CI runs it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.schemathesis_run import SEED, login, run_role, seed_world, write_config

pytestmark = pytest.mark.django_db(transaction=True)


def test_schemathesis_as_the_expert(live_server, media_root, tmp_path: Path) -> None:
    ids = seed_world()
    config = tmp_path / "schemathesis.toml"
    write_config(config, ids)
    result = run_role(
        base=live_server.url,
        token=login(live_server.url, "expert"),
        config=config,
        report=tmp_path / "expert.ndjson",
        max_examples=6,
        seed=SEED,
        workers=1,
        max_time=None,
        phases="fuzzing",
    )
    failures = [
        f"[{f['check']}] {f['operation']}: {f['title']}\n{f['message']}" for f in result["failures"]
    ]
    assert not failures, "\n".join(failures)
    assert not result["errors"], result["errors"]
    assert result["requests"] >= 300, result["output"][-3000:]
    assert result["statuses"].get("200", 0) > 20  # real objects answered, not only 404s
