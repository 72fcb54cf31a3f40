"""Schedules in the admin: their next run time in their own zone, their last runs linked to their
jobs, and the actions enable, disable and run now. Saving goes through `jobs.schedules`, which
refuses an invalid cron expression, time zone or params with a message on the field."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from jobs import registry, schedules
from jobs.errors import InvalidJobRequest, QueueUnavailable
from jobs.models import JobAudit, Schedule

#: The last runs a schedule's page shows.
LAST_RUNS = 20
#: A cron expression or a time kept on one line in the list.
NOWRAP = '<span style="white-space: nowrap">{}</span>'


class ScheduleForm(forms.ModelForm):
    type = forms.ChoiceField(label="Job type", choices=())

    class Meta:
        model = Schedule
        fields = [
            "name",
            "type",
            "params",
            "queue",
            "cron",
            "every",
            "timezone",
            "missed",
            "start_at",
            "end_at",
            "enabled",
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        type_field = self.fields["type"]
        assert isinstance(type_field, forms.ChoiceField)
        type_field.choices = [(name, name) for name in sorted(registry.names())]
        if not self.instance.pk and not self.initial.get("timezone"):
            from django.conf import settings

            self.initial["timezone"] = settings.TIME_ZONE

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        probe = Schedule(
            **{name: data[name] for name in self.Meta.fields if name in data}, created_at=self.instance.created_at
        )
        errors = schedules.validate(probe)
        for field, messages_ in errors.items():
            for message in messages_:
                self.add_error(field if field in self.fields else None, message)
        if not errors:
            data["params"] = probe.params
        return data


def _local(schedule: Schedule, moment: Any) -> str:
    return schedules.local_time(schedule, moment, seconds=False)


@admin.register(Schedule)
class ScheduleAdmin(admin.ModelAdmin):
    form = ScheduleForm
    list_display = ["name", "type", "when", "timezone", "enabled", "next_run", "last_run"]
    list_filter = ["enabled", "type", "declared"]
    search_fields = ["name", "type"]
    readonly_fields = ["next_run", "last_run", "declared", "recent_runs"]
    actions = ["enable", "disable", "run_now"]

    @admin.display(description="when")
    def when(self, schedule: Schedule) -> str:
        return format_html(NOWRAP, schedule.cron) if schedule.cron else f"every {schedule.every} s"

    @admin.display(description="next run", ordering="next_due_at")
    def next_run(self, schedule: Schedule) -> str:
        return format_html(NOWRAP, _local(schedule, schedule.next_due_at)) if schedule.enabled else "disabled"

    @admin.display(description="last run", ordering="last_due_at")
    def last_run(self, schedule: Schedule) -> str:
        return format_html(NOWRAP, _local(schedule, schedule.last_due_at))

    @admin.display(description=f"last runs (the latest {LAST_RUNS})")
    def recent_runs(self, schedule: Schedule) -> str:
        runs = list(schedule.runs.select_related("job").order_by("-due_at", "-id")[:LAST_RUNS]) if schedule.pk else []
        if not runs:
            return "none yet"
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    _local(schedule, run.due_at),
                    format_html(
                        '<a href="{}">{}</a>', reverse("admin:jobs_job_change", args=[run.job_id]), str(run.job_id)[:8]
                    )
                    if run.job_id
                    else "removed",
                    run.job.get_status_display() if run.job else "—",
                    "run now" if run.by_hand else "missed, run once" if run.missed else "on time",
                )
                for run in runs
            ),
        )
        return format_html(
            '<table class="schedule-runs"><thead><tr><th>due</th><th>job</th><th>status</th><th>made</th></tr></thead>'
            "<tbody>{}</tbody></table>",
            rows,
        )

    def save_model(self, request: HttpRequest, obj: Schedule, form: Any, change: bool) -> None:
        try:
            schedules.schedule_save(schedule=obj)
        except InvalidJobRequest as exc:  # validated by the form already; a race with a registry change
            self.message_user(request, f"Not saved: {exc}", messages.ERROR)

    @admin.action(description="Enable the selected schedules", permissions=["change"])
    def enable(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        done = schedules.schedules_enable(schedules=list(queryset), enabled=True)
        self.message_user(request, f"{done} schedule(s) enabled.", messages.SUCCESS)

    @admin.action(description="Disable the selected schedules", permissions=["change"])
    def disable(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        done = schedules.schedules_enable(schedules=list(queryset), enabled=False)
        self.message_user(request, f"{done} schedule(s) disabled.", messages.SUCCESS)

    @admin.action(description="Run the selected schedules now", permissions=["change"])
    def run_now(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        made = []
        for schedule in queryset:
            try:
                made.append(schedules.schedule_run_now(schedule=schedule, user=request.user, via=JobAudit.Via.ADMIN))
            except InvalidJobRequest as exc:
                self.message_user(request, f"{schedule}: not run: {exc}", messages.ERROR)
            except QueueUnavailable:
                self.message_user(request, "The queue (Redis) is unavailable: try again.", messages.ERROR)
                return
        if made:
            self.message_user(request, f"{len(made)} job(s) created.", messages.SUCCESS)
