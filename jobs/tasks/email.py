"""Send one e-mail through Django's e-mail backend (console by default, SMTP from the environment)."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import EmailMessage
from django.core.validators import validate_email
from pydantic import BaseModel, Field, field_validator

from jobs import queues
from jobs.registry import RetryPolicy, job_type
from jobs.runner import report_progress


class EmailParams(BaseModel):
    to: list[str] = Field(min_length=1, max_length=50, description="Recipient addresses.")
    subject: str = Field(min_length=1, max_length=255)
    body: str = Field(max_length=100_000)
    from_email: str | None = Field(None, description="Sender; DEFAULT_FROM_EMAIL when empty.")

    @field_validator("to", mode="before")
    @classmethod
    def one_address_is_a_list(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("to")
    @classmethod
    def addresses_are_valid(cls, value: list[str]) -> list[str]:
        for address in value:
            _check_address(address)
        return value

    @field_validator("from_email")
    @classmethod
    def sender_is_valid(cls, value: str | None) -> str | None:
        if value:
            _check_address(value)
        return value

    @field_validator("subject")
    @classmethod
    def subject_is_one_line(cls, value: str) -> str:
        if "\n" in value or "\r" in value:
            raise ValueError("must be a single line")
        return value


def _check_address(address: str) -> None:
    try:
        validate_email(address)
    except ValidationError:
        raise ValueError(f"{address!r} is not a valid e-mail address") from None


@job_type(
    "email",
    params=EmailParams,
    queue=queues.HIGH,
    # A worker that died mid-send may have sent it: do not send twice on our own.
    retry=RetryPolicy(max_attempts=5, base=10, factor=3, cap=3600, retry_lost=False),
    timeout=120,
)
def send_email(params: EmailParams) -> dict[str, object]:
    """Sends an e-mail."""
    message = EmailMessage(
        subject=params.subject,
        body=params.body,
        from_email=params.from_email or settings.DEFAULT_FROM_EMAIL,
        to=params.to,
    )
    sent = message.send(fail_silently=False)
    report_progress(100)
    return {"sent": sent, "to": params.to, "message_id": message.message().get("Message-ID")}
