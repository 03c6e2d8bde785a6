"""Replica logging of refused requests."""

import logging

import pytest

from pipelines.errors import GpuMemoryExhaustedError, ImageTooSmallError
from serve_app.logs import ClientErrorFilter, quiet_client_errors


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def logged() -> tuple[logging.Logger, Records]:
    logger = logging.getLogger("test.serve_app.logs")
    logger.filters.clear()
    handler = Records()
    logger.handlers = [handler]
    logger.propagate = False
    quiet_client_errors(logger)
    return logger, handler


def fail_with(logger: logging.Logger, error: Exception) -> None:
    try:
        raise error
    except Exception:
        logger.exception("Request failed.")


def test_client_error_is_logged_as_one_info_line(logged: tuple[logging.Logger, Records]) -> None:
    logger, handler = logged
    fail_with(logger, ImageTooSmallError("Image is smaller than the minimum of 64x64 pixels"))
    (record,) = handler.records
    assert record.levelno == logging.INFO and record.exc_info is None
    assert handler.format(record) == (
        "Request refused: 400 IMAGE_TOO_SMALL: Image is smaller than the minimum of 64x64 pixels"
    )


def test_server_errors_keep_their_level_and_traceback(logged: tuple[logging.Logger, Records]) -> None:
    logger, handler = logged
    fail_with(logger, GpuMemoryExhaustedError())
    fail_with(logger, ValueError("bug"))
    assert [r.levelno for r in handler.records] == [logging.ERROR, logging.ERROR]
    assert all("Traceback" in handler.format(r) for r in handler.records)


def test_filter_is_installed_once(logged: tuple[logging.Logger, Records]) -> None:
    logger, _ = logged
    quiet_client_errors(logger)
    assert sum(isinstance(f, ClientErrorFilter) for f in logger.filters) == 1
