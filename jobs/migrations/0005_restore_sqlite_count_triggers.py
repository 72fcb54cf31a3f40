"""SQLite: 0004 rebuilt jobs_job to add the generated search column, and a rebuilt
table loses its triggers. Put 0003's count triggers back and count the jobs afresh
(changes made while they were missing were not counted)."""

from importlib import import_module

from django.db import migrations

counters = import_module("jobs.migrations.0003_counters_search_groups")


def restore(apps, schema_editor):
    if schema_editor.connection.vendor != "sqlite":
        return
    for statement in [*counters.SQLITE_DROP, *counters.SQLITE_TRIGGERS]:
        schema_editor.execute(statement)
    schema_editor.execute("DELETE FROM jobs_jobcountdelta")
    schema_editor.execute("DELETE FROM jobs_jobcount")
    schema_editor.execute(counters.SEED_COUNTS)


class Migration(migrations.Migration):
    dependencies = [("jobs", "0004_search_text")]

    operations = [migrations.RunPython(restore, migrations.RunPython.noop)]
