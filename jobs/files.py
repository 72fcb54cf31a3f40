"""Files that jobs produce: written by a worker, served by the web, through the configured storage.

The storage is Django's default storage (`STORAGES["default"]`, chosen by `FILES_STORAGE` or
`FILES_STORAGE_BACKEND`): the local folder `MEDIA_ROOT` by default, or S3 (any S3-compatible service),
so that a web server on one machine serves what a worker wrote on another. Job types save through
`save_job_file` and never touch paths on the worker's disk.
"""

from __future__ import annotations

import inspect

from django.conf import settings
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, default_storage


def save_job_file(name: str, content: bytes | str | File) -> str:
    """Store `content` under `name` (e.g. "exports/<job id>.json"), replacing any earlier file of that name.

    Returns the name the storage kept. A job run again overwrites its own file instead of leaving a copy.
    """
    if isinstance(content, str):
        content = content.encode()
    if isinstance(content, bytes):
        content = ContentFile(content)
    if default_storage.exists(name):
        default_storage.delete(name)
    return default_storage.save(name, content)


def open_job_file(name: str) -> File | None:
    """The stored file opened for reading, or None when it is gone."""
    try:
        return default_storage.open(name, "rb")
    except FileNotFoundError:
        return None


def signed_download_url(name: str, *, filename: str) -> str | None:
    """A short-lived URL the browser can fetch the file from directly, when the deployment asks for it.

    None when downloads go through Django: `FILES_DOWNLOAD_REDIRECT` is off, or the storage is the local
    folder (which has no URL of its own) or cannot sign URLs. Raises FileNotFoundError when the file is gone.
    """
    if not settings.FILES_DOWNLOAD_REDIRECT or isinstance(default_storage, FileSystemStorage):
        return None
    # S3-style storages sign the response's headers too, so the browser saves the file under its name.
    if "parameters" not in inspect.signature(default_storage.url).parameters:
        return None
    if not default_storage.exists(name):
        raise FileNotFoundError(name)
    disposition = {"ResponseContentDisposition": f'attachment; filename="{filename}"'}
    return str(default_storage.url(name, parameters=disposition))  # type: ignore[call-arg]
