from django.contrib import admin

from jobs.models import Job, JobAttempt


class JobAttemptInline(admin.TabularInline):
    model = JobAttempt
    extra = 0
    can_delete = False
    fields = ("number", "outcome", "worker_name", "started_at", "ended_at", "retry_at", "error")
    readonly_fields = fields


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["id", "type", "queue", "status", "progress", "attempts", "created_at", "ended_at"]
    list_filter = ["status", "type", "queue"]
    search_fields = ["id", "error"]
    date_hierarchy = "created_at"
    inlines = [JobAttemptInline]
    readonly_fields = tuple(field.name for field in Job._meta.fields)
