"""Replica logging: the project's own lines in Serve's replica logs, and a refused request as one
INFO line there, not an ERROR with a traceback.

Serve writes one log file per replica (``logs/serve/replica_<app>_<deployment>_<id>.log``) through
the ``ray.serve`` logger, which does not propagate. Lines from ``pipelines.*`` and ``serve_app.*``
loggers would otherwise go to the worker's stderr (``logs/worker-*.err``), away from the replica's
file and its request ids: the weights' source, a backend's fallback, a 500's traceback.

Serve also logs every exception a deployment method raises with ``logger.exception("Request
failed.")``. For the 4xx errors that is noise: a client's truncated JPEG would put forty lines at
ERROR level into the operator's logs (and their alerts), and anyone can send many of them. Server
errors (5xx) keep their level and traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from pipelines.errors import BackgroundRemovalError

SERVE_LOGGER = "ray.serve"
PROJECT_LOGGERS = ("pipelines", "serve_app")


class ClientErrorFilter(logging.Filter):
    """Rewrites a record that carries a 4xx :class:`BackgroundRemovalError` to an INFO line with its
    ``error_code``; passes every other record unchanged."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, BackgroundRemovalError) and error.status_code < 500:
            record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
            record.msg, record.args = "Request refused: %d %s: %s", (error.status_code, error.error_code, error)
            record.exc_info, record.exc_text = None, None
        return True


class ToLogger(logging.Handler):
    """Hands every record to ``target`` (its filters, then its handlers), whatever handlers Serve
    gives that logger later."""

    def __init__(self, target: logging.Logger) -> None:
        super().__init__()
        self.target = target

    def emit(self, record: logging.LogRecord) -> None:
        self.target.handle(record)


def configure_replica_logging(
    serve_logger: logging.Logger | None = None, project_loggers: Iterable[str] = PROJECT_LOGGERS
) -> None:
    """Call from each deployment's constructor (idempotent): installs :class:`ClientErrorFilter`
    on Serve's replica logger and routes the project's loggers into it at Serve's log level."""
    target = serve_logger or logging.getLogger(SERVE_LOGGER)
    if not any(isinstance(f, ClientErrorFilter) for f in target.filters):
        target.addFilter(ClientErrorFilter())
    for name in project_loggers:
        logger = logging.getLogger(name)
        logger.setLevel(target.getEffectiveLevel())
        logger.propagate = False
        if not any(isinstance(h, ToLogger) and h.target is target for h in logger.handlers):
            logger.addHandler(ToLogger(target))
