"""Who may do what to jobs: Django's model permissions on Job, the one place that maps actions to them.

A viewer (view_job) reads; creating needs add_job; retry, cancel, stop and
promote need change_job; remove needs delete_job. The API, the admin and the
Jobs page all ask here.
"""

from __future__ import annotations

from typing import Any

from jobs.statuses import ALLOWED_BY_ACTION

ACTION_PERMISSIONS = {
    "retry": "jobs.change_job",
    "cancel": "jobs.change_job",
    "stop": "jobs.change_job",
    "promote": "jobs.change_job",
    "remove": "jobs.delete_job",
}
VIEW = "jobs.view_job"
CREATE = "jobs.add_job"
#: Pausing and resuming queues.
MANAGE_QUEUES = "jobs.change_job"


def may_act(user: Any, action: str) -> bool:
    return bool(user is not None and user.is_authenticated and user.has_perm(ACTION_PERMISSIONS[action]))


def actions_for(user: Any, status: str) -> list[str]:
    """The actions the job's status and the user's permissions allow, in the order buttons show them."""
    return allowed_actions(status, granted_actions(user))


def granted_actions(user: Any) -> frozenset[str]:
    """The actions the user may take on some job (read once; then `allowed_actions` needs no database)."""
    return frozenset(action for action in ACTION_PERMISSIONS if may_act(user, action))


def allowed_actions(status: str, granted: frozenset[str]) -> list[str]:
    """The actions a job's status allows among those granted, in the order buttons show them."""
    return [action for action, allowed in ALLOWED_BY_ACTION.items() if status in allowed and action in granted]
