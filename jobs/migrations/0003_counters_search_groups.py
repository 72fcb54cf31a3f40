"""Database triggers that count jobs per status, trigram search indexes (Postgres),
and the "Job viewers" / "Job operators" groups."""

from django.db import migrations

SQLITE_NOW = "strftime('%Y-%m-%d %H:%M:%f', 'now')"

SQLITE_TRIGGERS = [
    f"""CREATE TRIGGER jobs_job_count_insert AFTER INSERT ON jobs_job BEGIN
        INSERT INTO jobs_jobcountdelta (queue, status, delta, at) VALUES (NEW.queue, NEW.status, 1, {SQLITE_NOW});
    END""",
    f"""CREATE TRIGGER jobs_job_count_delete AFTER DELETE ON jobs_job BEGIN
        INSERT INTO jobs_jobcountdelta (queue, status, delta, at) VALUES (OLD.queue, OLD.status, -1, {SQLITE_NOW});
    END""",
    f"""CREATE TRIGGER jobs_job_count_update AFTER UPDATE OF status, queue ON jobs_job
        WHEN OLD.status != NEW.status OR OLD.queue != NEW.queue BEGIN
        INSERT INTO jobs_jobcountdelta (queue, status, delta, at)
        VALUES (OLD.queue, OLD.status, -1, {SQLITE_NOW}), (NEW.queue, NEW.status, 1, {SQLITE_NOW});
    END""",
]
SQLITE_DROP = [
    "DROP TRIGGER IF EXISTS jobs_job_count_insert",
    "DROP TRIGGER IF EXISTS jobs_job_count_delete",
    "DROP TRIGGER IF EXISTS jobs_job_count_update",
]

POSTGRES_TRIGGERS = [
    """CREATE OR REPLACE FUNCTION jobs_job_count_delta() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            INSERT INTO jobs_jobcountdelta (queue, status, delta, at) VALUES (NEW.queue, NEW.status, 1, now());
        ELSIF TG_OP = 'DELETE' THEN
            INSERT INTO jobs_jobcountdelta (queue, status, delta, at) VALUES (OLD.queue, OLD.status, -1, now());
        ELSIF NEW.status IS DISTINCT FROM OLD.status OR NEW.queue IS DISTINCT FROM OLD.queue THEN
            INSERT INTO jobs_jobcountdelta (queue, status, delta, at)
            VALUES (OLD.queue, OLD.status, -1, now()), (NEW.queue, NEW.status, 1, now());
        END IF;
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER jobs_job_count AFTER INSERT OR UPDATE OF status, queue OR DELETE ON jobs_job
        FOR EACH ROW EXECUTE FUNCTION jobs_job_count_delta()""",
    # Searching ids, params and error text stays fast at millions of rows.
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    "CREATE INDEX IF NOT EXISTS job_params_trgm_idx ON jobs_job USING gin (UPPER(params::text) gin_trgm_ops)",
    "CREATE INDEX IF NOT EXISTS job_error_trgm_idx ON jobs_job USING gin (UPPER(error) gin_trgm_ops)",
]
POSTGRES_DROP = [
    "DROP INDEX IF EXISTS job_error_trgm_idx",
    "DROP INDEX IF EXISTS job_params_trgm_idx",
    "DROP TRIGGER IF EXISTS jobs_job_count ON jobs_job",
    "DROP FUNCTION IF EXISTS jobs_job_count_delta()",
]

SEED_COUNTS = """INSERT INTO jobs_jobcount (queue, status, count)
    SELECT queue, status, COUNT(*) FROM jobs_job GROUP BY queue, status"""


def create(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    statements = {"sqlite": SQLITE_TRIGGERS, "postgresql": POSTGRES_TRIGGERS}.get(vendor)
    if statements is None:
        raise RuntimeError(f"jobs supports SQLite and PostgreSQL, not {vendor}")
    for statement in statements:
        schema_editor.execute(statement)
    schema_editor.execute(SEED_COUNTS)


def drop(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    for statement in {"sqlite": SQLITE_DROP, "postgresql": POSTGRES_DROP}.get(vendor, []):
        schema_editor.execute(statement)


VIEWER_PERMISSIONS = ["view_job", "view_jobattempt"]
OPERATOR_PERMISSIONS = [*VIEWER_PERMISSIONS, "add_job", "change_job", "delete_job"]


def create_groups(apps, schema_editor):
    from django.contrib.auth.management import create_permissions

    # Permissions are normally made after all migrations; the groups need them now.
    app_config = apps.get_app_config("jobs")
    app_config.models_module = True
    create_permissions(app_config, verbosity=0, apps=apps)
    app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, codenames in (("Job viewers", VIEWER_PERMISSIONS), ("Job operators", OPERATOR_PERMISSIONS)):
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.add(*Permission.objects.filter(content_type__app_label="jobs", codename__in=codenames))


def remove_groups(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=["Job viewers", "Job operators"]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0002_job_counts"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.RunPython(create, drop),
        migrations.RunPython(create_groups, remove_groups),
    ]
