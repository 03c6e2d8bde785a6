"""Replica logging: a refused request is one INFO line, not an ERROR with a traceback.

Ray Serve logs every exception a deployment method raises with ``logger.exception("Request
failed.")``. For the 4xx errors that is noise: a client's truncated JPEG would put forty lines at
ERROR level into the operator's logs (and their alerts), and anyone can send many of them. Server
errors (5xx) keep their level and traceback.
"""

from __future__ import annotations

import logging

from pipelines.errors import BackgroundRemovalError

SERVE_LOGGER = "ray.serve"


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


def quiet_client_errors(logger: logging.Logger | None = None) -> None:
    """Install :class:`ClientErrorFilter` on Serve's replica logger (once per process)."""
    target = logger or logging.getLogger(SERVE_LOGGER)
    if not any(isinstance(f, ClientErrorFilter) for f in target.filters):
        target.addFilter(ClientErrorFilter())
