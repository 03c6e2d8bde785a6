"""The /remove form reader: fields, defaults, size limits and the 400 INVALID_REQUEST cases."""

from __future__ import annotations

import pytest

from pipelines.errors import FileTooLargeError, InvalidRequestError
from serve_app.form import (
    FORM_OVERHEAD_BYTES,
    RemovalFormReader,
    check_declared_length,
    check_handle_arguments,
    parse_content_length,
    parse_form_bool,
)

BOUNDARY = "----TestBoundary"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def multipart(*parts: tuple[str, bytes, str | None]) -> bytes:
    """Encode ``(name, value, filename)`` parts the way a browser does."""
    body = b""
    for name, value, filename in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n".encode()
        if filename:
            body += b"Content-Type: image/png\r\n"
        body += b"\r\n" + value + b"\r\n"
    return body + f"--{BOUNDARY}--\r\n".encode()


def read(body: bytes, max_file_bytes: int = 1000, chunk: int = 7) -> object:
    reader = RemovalFormReader(CONTENT_TYPE, max_file_bytes=max_file_bytes)
    for start in range(0, len(body), chunk):
        reader.feed(body[start : start + chunk])
    return reader.finish()


def test_form_reads_image_and_defaults() -> None:
    form = read(multipart(("image", b"\x89PNG data", "cat.png")))
    assert form.image.data == b"\x89PNG data"
    assert form.image.filename == "cat.png"
    assert form.image.content_type == "image/png"
    assert form.options.smoothing is True
    assert form.return_base64 is False


def test_form_reads_flags() -> None:
    body = multipart(("image", b"x", "a.png"), ("smoothing", b"false", None), ("return_base64", b"TRUE", None))
    form = read(body)
    assert form.options.smoothing is False and form.options.refine_foreground is True
    assert form.return_base64 is True
    unrefined = read(multipart(("image", b"x", "a.png"), ("refine_foreground", b"0", None)))
    assert unrefined.options.refine_foreground is False


def test_form_reads_empty_flags_as_not_sent() -> None:
    form = read(multipart(("image", b"x", "a.png"), ("smoothing", b"", None), ("return_base64", b" ", None)))
    assert form.options.smoothing is True
    assert form.return_base64 is False


def test_form_ignores_unknown_fields() -> None:
    assert read(multipart(("image", b"x", "a.png"), ("note", b"hello", None))).image.data == b"x"


def test_form_rejects_missing_image() -> None:
    with pytest.raises(InvalidRequestError, match="Missing form field 'image'"):
        read(multipart(("smoothing", b"true", None)))


def test_a_photo_sent_under_another_name_is_pointed_at_the_image_field() -> None:
    with pytest.raises(InvalidRequestError, match="Unexpected file field 'file'.*'image' file field") as big:
        read(multipart(("file", b"\x89PNG" + b"x" * 5000, "photo.png")), max_file_bytes=10_000)
    assert big.value.fields == {"field": "image"}
    with pytest.raises(InvalidRequestError, match=r"Missing form field 'image' \(a file came as 'upload'"):
        read(multipart(("upload", b"\x89PNG tiny", "photo.png")))


def test_form_rejects_a_long_text_field() -> None:
    with pytest.raises(InvalidRequestError, match="Form field 'note' is too long") as long:
        read(multipart(("image", b"x", "a.png"), ("note", b"n" * 2000, None)))
    assert long.value.fields == {"field": "note"}


def test_form_rejects_duplicated_image() -> None:
    with pytest.raises(InvalidRequestError, match="must appear once"):
        read(multipart(("image", b"x", "a.png"), ("image", b"y", "b.png")))


@pytest.mark.parametrize("field", ["image", "smoothing"])
def test_a_second_copy_of_a_field_is_refused_at_its_headers_before_its_data_is_kept(field: str) -> None:
    first = multipart(("image", b"x", "a.png"), ("smoothing", b"true", None)).rsplit(f"--{BOUNDARY}--".encode(), 1)[0]
    second_headers = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{field}"\r\n\r\n'.encode()
    reader = RemovalFormReader(CONTENT_TYPE, max_file_bytes=1000)
    reader.feed(first)
    with pytest.raises(InvalidRequestError, match="must appear once") as caught:
        reader.feed(second_headers)  # not at finish(): a second 10 MB image would be held meanwhile
    assert caught.value.fields["field"] == field


def test_a_boundary_longer_than_the_parser_takes_is_an_invalid_request() -> None:
    with pytest.raises(InvalidRequestError, match="boundary"):
        RemovalFormReader(f"multipart/form-data; boundary={'b' * 300}", max_file_bytes=1000)


def test_the_whole_body_is_capped_even_after_the_closing_boundary() -> None:
    # A chunked body declares no size: framing beyond what the form could need is a 413 too.
    reader = RemovalFormReader(CONTENT_TYPE, max_file_bytes=1000)
    reader.feed(multipart(("image", b"x" * 1000, "a.png")))
    with pytest.raises(FileTooLargeError):
        for _ in range(FORM_OVERHEAD_BYTES // 4096 + 1):
            reader.feed(b"z" * 4096)


def test_form_rejects_empty_image() -> None:
    with pytest.raises(InvalidRequestError, match="empty"):
        read(multipart(("image", b"", "a.png")))


def test_form_rejects_bad_boolean() -> None:
    with pytest.raises(InvalidRequestError, match="smoothing"):
        read(multipart(("image", b"x", "a.png"), ("smoothing", b"maybe", None)))


@pytest.mark.parametrize("content_type", [None, "application/json", "multipart/form-data", "text/plain"])
def test_form_rejects_non_multipart(content_type: str | None) -> None:
    with pytest.raises(InvalidRequestError, match="multipart/form-data"):
        RemovalFormReader(content_type, max_file_bytes=1000)


def test_form_rejects_truncated_body() -> None:
    body = multipart(("image", b"x" * 50, "a.png"))
    with pytest.raises(InvalidRequestError):
        read(body[:40])


def test_form_raises_file_too_large_while_streaming() -> None:
    reader = RemovalFormReader(CONTENT_TYPE, max_file_bytes=100)
    body = multipart(("image", b"x" * 1000, "a.png"))
    with pytest.raises(FileTooLargeError) as caught:
        for start in range(0, len(body), 64):
            reader.feed(body[start : start + 64])
    assert caught.value.status_code == 413
    assert caught.value.fields["max_size_mb"] == 0.0


def test_declared_length_over_limit_is_413_before_reading() -> None:
    limit = 10 * 1024 * 1024
    check_declared_length(limit + FORM_OVERHEAD_BYTES, limit)
    with pytest.raises(FileTooLargeError) as caught:
        check_declared_length(13 * 1024 * 1024, limit)
    assert caught.value.to_body() == {
        "detail": "File size exceeds 10MB limit",
        "error_code": "FILE_TOO_LARGE",
        "file_size_mb": 13.0,
        "max_size_mb": 10.0,
    }


def test_content_length_parsing() -> None:
    assert parse_content_length(None) is None
    assert parse_content_length("123") == 123
    with pytest.raises(InvalidRequestError):
        parse_content_length("-5")


@pytest.mark.parametrize(
    ("text", "value"), [(b"true", True), (b"1", True), (b"On", True), (b"false", False), (b"0", False), (b"no", False)]
)
def test_form_bool_spellings(text: bytes, value: bool) -> None:
    assert parse_form_bool("smoothing", text) is value


@pytest.mark.parametrize(("image", "smoothing", "refine", "filename", "field"), [
    ("photo.jpg", True, True, None, "image"),
    (None, True, True, None, "image"),
    (b"\xff\xd8\xff", "false", True, None, "smoothing"),  # a truthy string would smooth
    (b"\xff\xd8\xff", 1, True, None, "smoothing"),
    (b"\xff\xd8\xff", False, "no", None, "refine_foreground"),
    (b"\xff\xd8\xff", False, True, 42, "filename"),
])
def test_handle_arguments_of_the_wrong_type_are_invalid_requests(
    image: object, smoothing: object, refine: object, filename: object, field: str
) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        check_handle_arguments(image, filename, smoothing=smoothing, refine_foreground=refine)
    assert caught.value.fields["field"] == field


def test_handle_arguments_accept_any_bytes_like_image() -> None:
    for image in (b"x", bytearray(b"x"), memoryview(b"x")):
        check_handle_arguments(image, "cat.png", smoothing=False, refine_foreground=True)
