"""Two indexes fewer to maintain on every insert: the foreign key's own index on
`created_by` (job_created_by_idx starts with the same column), and the NULL
`ended_at` of every job not yet ended (filters on it are ranges, which a partial
index serves). The index is dropped by name rather than through AlterField,
which on SQLite would rebuild the table and lose its count triggers."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

FK_INDEX = "jobs_job_created_by_id_f3283268"


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0005_restore_sqlite_count_triggers"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RemoveIndex(model_name="job", name="job_ended_idx"),
        migrations.AddIndex(
            model_name="job",
            index=models.Index(
                condition=models.Q(("ended_at__isnull", False)), fields=["-ended_at"], name="job_ended_idx"
            ),
        ),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="job",
                    name="created_by",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    f"DROP INDEX IF EXISTS {FK_INDEX}",
                    f"CREATE INDEX {FK_INDEX} ON jobs_job (created_by_id)",
                ),
            ],
        ),
    ]
