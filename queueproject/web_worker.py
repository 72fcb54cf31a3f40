"""The web server's worker: gunicorn running the ASGI application on uvicorn.

`gunicorn queueproject.asgi:application -k queueproject.web_worker.UvicornWorker`

Uvicorn's worker, but a stop (SIGTERM, a deploy, a scale-down) ends the live pages' event
streams at once. Those responses never end on their own: uvicorn would wait for them until
gunicorn's graceful timeout and then be killed, with every other request cut short. Ended,
each page's browser reconnects within seconds, to another server or to this one restarted, and
catches up from where it was (the stream's position travels as Last-Event-ID); ordinary requests
in flight still get the whole graceful timeout to finish.
"""

from __future__ import annotations

import socket
import sys

from gunicorn.arbiter import Arbiter
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker as BaseUvicornWorker


class _Server(Server):
    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        from jobs import live  # the application (and Django) is loaded by now

        live.close_streams()
        await super().shutdown(sockets)


class UvicornWorker(BaseUvicornWorker):
    async def _serve(self) -> None:
        # uvicorn_worker's own, with the server above (pinned in requirements.txt).
        self.config.app = self.wsgi
        server = _Server(config=self.config)
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
