"""Search reads `jobs.models.SEARCH_TEXT`: the params as `search_params` has them (secrets
masked) when set, else as stored, and the error. It replaces the generated column
`search_text` (0004), which held every param, secrets included.

On PostgreSQL the trigram index is built on the expression itself, CONCURRENTLY (writes
go on meanwhile), before the old column and its index are dropped (no table rewrite):
searches are served by an index all along. Not atomic, for CREATE INDEX CONCURRENTLY.
"""

from django.db import migrations, models
from django.db.models import Value
from django.db.models.functions import Cast, Coalesce, Concat, Upper
from django.db.models.sql import Query

INDEX = "job_search_masked_trgm_idx"
OLD_INDEX = "job_search_trgm_idx"


def search_text():
    """jobs.models.SEARCH_TEXT as it is at this migration: the planner uses the index for
    queries on the very same expression."""
    return Upper(
        Concat(
            Cast(Coalesce("search_params", "params"), models.TextField()),
            Value("\n"),
            "error",
            output_field=models.TextField(),
        )
    )


def create_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    # The expression's SQL as Django writes it in queries (without the table's name).
    query = Query(apps.get_model("jobs", "Job"), alias_cols=False)
    compiler = query.get_compiler(connection=schema_editor.connection)
    sql, params = search_text().resolve_expression(query).as_sql(compiler, schema_editor.connection)
    expression = sql % tuple(schema_editor.quote_value(param) for param in params)
    # A build that failed before leaves an invalid index of that name: start again.
    schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")
    schema_editor.execute(f"CREATE INDEX CONCURRENTLY {INDEX} ON jobs_job USING gin (({expression}) gin_trgm_ops)")


def drop_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")


def recreate_old_index(apps, schema_editor):
    """Going back: 0004's index on the column (dropped with it) comes back with it."""
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"CREATE INDEX IF NOT EXISTS {OLD_INDEX} ON jobs_job USING gin (search_text gin_trgm_ops)")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("jobs", "0009_search_params")]

    operations = [
        migrations.RunPython(create_index, drop_index, atomic=False),
        migrations.RunPython(migrations.RunPython.noop, recreate_old_index),
        # Drops 0004's trigram index with it.
        migrations.RemoveField(model_name="job", name="search_text"),
    ]
