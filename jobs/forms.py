"""The "create a job" form, built from a job type's params schema: shared by the admin and the Jobs page.

A field per param (text, number, yes/no, a choice; JSON for lists and objects,
where plain text is taken as one string), with the schema's default, bounds and
description. The form only parses: `jobs.services` validates the params
against the type's schema and creates the job; its field errors come back onto
the fields they belong to.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.utils import timezone

from jobs import queues, registry, services
from jobs.errors import InvalidJobRequest
from jobs.models import Job

#: Param fields are named with this prefix, so a param can never clash with type, queue, ...
PARAM_PREFIX = "param_"
#: Text params longer than this get a text area.
LONG_TEXT = 255


def _schema_branch(schema: dict[str, Any]) -> dict[str, Any]:
    """The non-null branch of an optional param (`anyOf: [X, null]`), else the schema itself."""
    branches = [branch for branch in schema.get("anyOf", []) if branch.get("type") != "null"]
    return {**schema, **branches[0]} if len(branches) == 1 else schema


def param_field(name: str, schema: dict[str, Any], required: bool) -> forms.Field:
    """A form field for one param of a JSON schema.

    The schema, not the form, decides what is required: the form leaves an empty
    field out and the type's validation names every missing and every wrong param
    at once. `schema_required` marks the field for the label.
    """
    field = _param_field(name, schema)
    field.schema_required = required  # type: ignore[attr-defined]
    return field


def _param_field(name: str, schema: dict[str, Any]) -> forms.Field:
    spec = _schema_branch(schema)
    required = False
    common: dict[str, Any] = {
        "label": spec.get("title") or name.replace("_", " ").capitalize(),
        "help_text": spec.get("description", ""),
        "required": required,
        "initial": spec.get("default"),
    }
    kind = spec.get("type")
    if "enum" in spec:
        choices = [(value, value) for value in spec["enum"]]
        return forms.ChoiceField(choices=[("", "---------"), *choices] if not required else choices, **common)
    if kind == "boolean":
        return forms.BooleanField(**{**common, "required": False})
    if kind == "integer":
        return forms.IntegerField(min_value=spec.get("minimum"), max_value=spec.get("maximum"), **common)
    if kind == "number":
        return forms.FloatField(min_value=spec.get("minimum"), max_value=spec.get("maximum"), **common)
    if kind == "string" and spec.get("format") != "date-time":
        max_length = spec.get("maxLength")
        long = max_length is None or max_length > LONG_TEXT
        widget = forms.Textarea(attrs={"rows": 4}) if long else forms.TextInput()
        return forms.CharField(max_length=max_length, strip=False, widget=widget, **common)
    if kind == "string":  # date-time: ISO 8601, kept as text for the schema to check
        return forms.CharField(widget=forms.TextInput(attrs={"placeholder": "2026-12-01T09:00:00+01:00"}), **common)
    initial = common.pop("initial")
    help_text = common.pop("help_text")
    hint = "JSON (a list or an object); plain text is taken as one string."
    return JsonOrTextField(
        widget=forms.Textarea(attrs={"rows": 3}),
        initial=None if initial is None else json.dumps(initial),
        help_text=f"{help_text} {hint}".strip(),
        **common,
    )


class JsonOrTextField(forms.CharField):
    """JSON when the text parses as JSON, else the text itself."""

    def to_python(self, value: Any) -> Any:
        text = super().to_python(value)
        if text is None or text in self.empty_values:
            return None
        try:
            return json.loads(text)
        except ValueError:
            return text
        except RecursionError:  # nested deeper than Python reads: the same rule as params nested too deep
            raise forms.ValidationError(
                f"must not nest lists and objects over {registry.MAX_PARAMS_DEPTH} levels deep", code="too_deep"
            ) from None


class JobCreateForm(forms.Form):
    type = forms.ChoiceField(label="Job type")
    queue = forms.ChoiceField(label="Queue", required=False)
    delay_seconds = forms.FloatField(
        label="Delay (seconds)", required=False, min_value=0, help_text="Run no sooner than this many seconds from now."
    )
    run_at = forms.DateTimeField(
        label="Run at",
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )

    def __init__(self, *args: Any, job_type: str | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        types = registry.all_types()
        type_field: Any = self.fields["type"]
        type_field.choices = [
            (spec.name, f"{spec.name}: {spec.description}" if spec.description else spec.name) for spec in types
        ]
        chosen = job_type or (self.data.get("type") if self.is_bound else None) or "example"
        self.spec = registry.get(chosen) if chosen in registry.names() else registry.get("example")
        self.initial.setdefault("type", self.spec.name)
        self.fields["run_at"].help_text = f"Or run no sooner than this time ({timezone.get_current_timezone_name()})."
        queue_field: Any = self.fields["queue"]
        queue_field.choices = [("", f"The type's queue ({self.spec.queue})"), *((q, q) for q in queues.QUEUE_NAMES)]
        schema = self.spec.json_schema()
        required = set(schema.get("required", []))
        for name, prop in schema.get("properties", {}).items():
            self.fields[PARAM_PREFIX + name] = param_field(name, prop, name in required)

    def param_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in self.fields if name.startswith(PARAM_PREFIX)]

    def other_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in ("queue", "delay_seconds", "run_at")]

    def clean_run_at(self) -> Any:
        value = self.cleaned_data.get("run_at")
        if value is not None and timezone.is_naive(value):
            value = timezone.make_aware(value)
        return value

    def params(self) -> dict[str, Any]:
        """The params as given: fields left empty are left out (the schema's defaults apply)."""
        params = {}
        for name, value in self.cleaned_data.items():
            if name.startswith(PARAM_PREFIX) and value not in (None, ""):
                params[name[len(PARAM_PREFIX) :]] = value
        return params

    def create(self, *, user: Any) -> Job | None:
        """Create the job through the services; None (with the errors on the form) when it is refused.

        Raises QueueUnavailable when Redis is away (nothing is created)."""
        if not self.is_valid():
            if any(not name.startswith(PARAM_PREFIX) for name in self.errors):
                return None
            self._report_params()  # the params' own errors too, all at once
            return None
        data = self.cleaned_data
        try:
            return services.job_enqueue(
                type=data["type"],
                params=self.params(),
                queue=data.get("queue") or None,
                delay_seconds=data.get("delay_seconds"),
                run_at=data.get("run_at"),
                user=user,
            )
        except InvalidJobRequest as exc:
            for key, messages in exc.errors.items():
                self.add_error(self._field_for(key), messages)
            return None

    def _report_params(self) -> None:
        try:
            self.spec.validate(self.params())
        except InvalidJobRequest as exc:
            for key, messages in exc.errors.items():
                name = self._field_for(key)
                if name is None or name not in self.errors:
                    self.add_error(name, messages)

    def _field_for(self, key: str) -> str | None:
        if key in self.fields:
            return key
        if key.startswith("params."):
            name = PARAM_PREFIX + key.split(".")[1]
            return name if name in self.fields else None
        return None
