"""Secret params out of search: the params as search may read them (secrets masked) get a
column of their own, set when a row is written (`jobs.models.SearchParamsField`).

Only the params of types with secret params are copied, masked; for every other row it
stays NULL and search reads the params as stored. Adding a nullable column rewrites
nothing; the rows filled in here are those of the types with secrets, found by type
(indexed), so existing secrets stop being searchable as soon as 0010 is applied.
Rows of a type no longer registered have no known secrets and are left as they are.
"""

from django.db import migrations

import jobs.models

BATCH = 1000


def mask_secrets_for_search(apps, schema_editor):
    from jobs import registry

    Job = apps.get_model("jobs", "Job")
    for spec in registry.all_types():
        if not spec.secret_params:
            continue
        rows = Job.objects.filter(type=spec.name).values_list("pk", "params")
        batch = []
        for pk, params in rows.iterator(chunk_size=BATCH):
            searchable = registry.searchable_params(spec.name, params)
            if searchable is not None:
                batch.append(Job(pk=pk, search_params=searchable))
            if len(batch) >= BATCH:
                Job.objects.bulk_update(batch, ["search_params"])
                batch = []
        if batch:
            Job.objects.bulk_update(batch, ["search_params"])


class Migration(migrations.Migration):
    dependencies = [("jobs", "0008_progress_order")]

    operations = [
        migrations.AddField(
            model_name="job",
            name="search_params",
            field=jobs.models.SearchParamsField(blank=True, editable=False, null=True),
        ),
        migrations.RunPython(mask_secrets_for_search, migrations.RunPython.noop),
    ]
