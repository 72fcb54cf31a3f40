"""Database triggers that count jobs per status, and the "Job viewers" / "Job operators" groups."""

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

# Postgres: statement-level triggers with transition tables, so a bulk insert or a
# mirror batch of 500 updates writes a few grouped rows, not one per job.
POSTGRES_TRIGGERS = [
    """CREATE OR REPLACE FUNCTION jobs_job_count_insert() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO jobs_jobcountdelta (queue, status, delta, at)
        SELECT queue, status, COUNT(*), now() FROM new_rows GROUP BY queue, status;
        RETURN NULL;
    END $$""",
    """CREATE OR REPLACE FUNCTION jobs_job_count_delete() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO jobs_jobcountdelta (queue, status, delta, at)
        SELECT queue, status, -COUNT(*), now() FROM old_rows GROUP BY queue, status;
        RETURN NULL;
    END $$""",
    """CREATE OR REPLACE FUNCTION jobs_job_count_update() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO jobs_jobcountdelta (queue, status, delta, at)
        SELECT o.queue, o.status, -COUNT(*), now() FROM old_rows o JOIN new_rows n ON n.id = o.id
        WHERE o.status IS DISTINCT FROM n.status OR o.queue IS DISTINCT FROM n.queue
        GROUP BY o.queue, o.status
        UNION ALL
        SELECT n.queue, n.status, COUNT(*), now() FROM old_rows o JOIN new_rows n ON n.id = o.id
        WHERE o.status IS DISTINCT FROM n.status OR o.queue IS DISTINCT FROM n.queue
        GROUP BY n.queue, n.status;
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER jobs_job_count_insert AFTER INSERT ON jobs_job
        REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION jobs_job_count_insert()""",
    """CREATE TRIGGER jobs_job_count_delete AFTER DELETE ON jobs_job
        REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION jobs_job_count_delete()""",
    """CREATE TRIGGER jobs_job_count_update AFTER UPDATE ON jobs_job
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION jobs_job_count_update()""",
]
POSTGRES_DROP = [
    "DROP TRIGGER IF EXISTS jobs_job_count_insert ON jobs_job",
    "DROP TRIGGER IF EXISTS jobs_job_count_delete ON jobs_job",
    "DROP TRIGGER IF EXISTS jobs_job_count_update ON jobs_job",
    "DROP FUNCTION IF EXISTS jobs_job_count_insert()",
    "DROP FUNCTION IF EXISTS jobs_job_count_delete()",
    "DROP FUNCTION IF EXISTS jobs_job_count_update()",
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
