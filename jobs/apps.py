import importlib

from django.apps import AppConfig
from django.conf import settings
from django.utils.module_loading import autodiscover_modules


class JobsConfig(AppConfig):
    name = "jobs"
    verbose_name = "Jobs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Register the job types: the built-in ones, every installed app's
        # `job_types` module, and the modules listed in JOBS_MODULES.
        import jobs.tasks  # noqa: F401

        autodiscover_modules("job_types")
        for module in settings.JOBS_MODULES:
            importlib.import_module(module)
