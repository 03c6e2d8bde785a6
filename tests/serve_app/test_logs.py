"""Replica logging: the project's lines reach Serve's logger, and refused requests are one line."""

import logging
from collections.abc import Iterator

import pytest

from pipelines.errors import GpuMemoryExhaustedError, ImageTooSmallError
from serve_app.logs import ClientErrorFilter, ToLogger, configure_replica_logging


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


PROJECT = ("test_logs_pipelines",)


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, Records]]:
    """A stand-in for Serve's replica logger at INFO, configured as a replica would configure it."""
    serve_logger = logging.getLogger("test_logs_serve")
    handler = Records()
    serve_logger.handlers, serve_logger.filters = [handler], []
    serve_logger.setLevel(logging.INFO)
    serve_logger.propagate = False
    configure_replica_logging(serve_logger, PROJECT)
    yield serve_logger, handler
    logging.getLogger(PROJECT[0]).handlers.clear()


def fail_with(logger: logging.Logger, error: Exception) -> None:
    try:
        raise error
    except Exception:
        logger.exception("Request failed.")


def test_client_error_is_logged_as_one_info_line(logged: tuple[logging.Logger, Records]) -> None:
    serve_logger, handler = logged
    fail_with(serve_logger, ImageTooSmallError("Image is smaller than the minimum of 64x64 pixels"))
    (record,) = handler.records
    assert record.levelno == logging.INFO and record.exc_info is None
    assert handler.format(record) == (
        "Request refused: 400 IMAGE_TOO_SMALL: Image is smaller than the minimum of 64x64 pixels"
    )


def test_server_errors_keep_their_level_and_traceback(logged: tuple[logging.Logger, Records]) -> None:
    serve_logger, handler = logged
    fail_with(serve_logger, GpuMemoryExhaustedError())
    fail_with(serve_logger, ValueError("bug"))
    assert [r.levelno for r in handler.records] == [logging.ERROR, logging.ERROR]
    assert all("Traceback" in handler.format(r) for r in handler.records)


def test_project_lines_reach_the_replica_log_at_its_level(logged: tuple[logging.Logger, Records]) -> None:
    _, handler = logged
    project = logging.getLogger(f"{PROJECT[0]}.segmenter")
    project.debug("below the replica's level")
    project.info("BiRefNet general weights: %s", "verified")
    fail_with(project, ValueError("unexpected"))
    assert [(r.name, r.getMessage()) for r in handler.records] == [
        (f"{PROJECT[0]}.segmenter", "BiRefNet general weights: verified"),
        (f"{PROJECT[0]}.segmenter", "Request failed."),
    ]
    assert "Traceback" in handler.format(handler.records[1])
    assert not logging.getLogger(PROJECT[0]).propagate  # not a second copy on the worker's stderr


def test_configuring_twice_installs_everything_once(logged: tuple[logging.Logger, Records]) -> None:
    serve_logger, _ = logged
    configure_replica_logging(serve_logger, PROJECT)
    assert sum(isinstance(f, ClientErrorFilter) for f in serve_logger.filters) == 1
    assert sum(isinstance(h, ToLogger) for h in logging.getLogger(PROJECT[0]).handlers) == 1
