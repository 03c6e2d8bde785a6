"""Reading the ``multipart/form-data`` body of ``POST /remove`` (spec §3.2), without FastAPI.

FastAPI's own form handling answers a missing field with 422 and spools uploads to temporary
files; the spec wants 400 INVALID_REQUEST and the service wants the upload in memory with its size
capped while it streams in. :class:`RemovalFormReader` is fed the body chunk by chunk and raises
``FileTooLargeError`` as soon as the ``image`` part passes the limit.
"""

from __future__ import annotations

from dataclasses import dataclass

from python_multipart.exceptions import FormParserError, MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from pipelines.datatypes import RemovalOptions
from pipelines.errors import InvalidRequestError
from pipelines.validate import file_too_large

# Multipart framing around the image: boundaries, part headers and the two small fields.
FORM_OVERHEAD_BYTES = 64 * 1024
_MAX_FIELD_BYTES = 1024
_MAX_PARTS = 16
_SINGLE_FIELDS = ("image", "smoothing", "refine_foreground", "return_base64")
_TRUE = frozenset({"true", "1", "yes", "on", "t", "y"})
_FALSE = frozenset({"false", "0", "no", "off", "f", "n"})
_EXPECTED = "Expected a multipart/form-data body with one 'image' file field"


@dataclass(frozen=True)
class UploadedImage:
    """The ``image`` part of the form.

    Attributes:
        data: the uploaded bytes, unchecked.
        filename: the client's file name, if it sent one (untrusted; see ``responses``).
        content_type: the part's declared media type, if any (untrusted; used only in messages).
    """

    data: bytes
    filename: str | None
    content_type: str | None


@dataclass(frozen=True)
class RemovalForm:
    """The parsed form: the image, the pixel options and the response shape."""

    image: UploadedImage
    options: RemovalOptions
    return_base64: bool


def parse_content_length(value: str | None) -> int | None:
    """The declared body size, or None when absent. Raises InvalidRequestError when malformed."""
    if value is None:
        return None
    if not value.strip().isdigit():
        raise InvalidRequestError("Malformed Content-Length header")
    return int(value)


def _max_body_bytes(max_file_bytes: int) -> int:
    """The largest body a form with an image within the limit can need."""
    return max_file_bytes + FORM_OVERHEAD_BYTES


def check_declared_length(length: int | None, max_file_bytes: int) -> None:
    """413 before reading anything when the declared body cannot hold an image within the limit."""
    if length is not None and length > _max_body_bytes(max_file_bytes):
        raise file_too_large(length, max_file_bytes)


def parse_bool(text: str) -> bool | None:
    """``true``/``false`` and FastAPI's other spellings (1/0, yes/no, on/off, t/f, y/n), any case;
    None for anything else."""
    lowered = text.strip().lower()
    return True if lowered in _TRUE else False if lowered in _FALSE else None


def parse_form_bool(name: str, value: bytes) -> bool:
    """A boolean form field, as :func:`parse_bool` reads it; 400 INVALID_REQUEST otherwise."""
    parsed = parse_bool(value.decode("utf-8", errors="replace"))
    if parsed is None:
        raise InvalidRequestError(f"Form field '{name}' must be true or false", field=name)
    return parsed


def check_handle_arguments(image: object, filename: object, **flags: object) -> None:
    """The handle API's arguments, typed as the HTTP form's fields are parsed (400 otherwise).

    Python callers bypass the form: a ``smoothing="false"`` string would be truthy, and a ``str``
    image is not an upload. ``flags`` are the boolean options by name.
    """
    if not isinstance(image, (bytes, bytearray, memoryview)):
        raise InvalidRequestError(f"image must be the encoded file as bytes, not {type(image).__name__}",
                                  field="image")
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise InvalidRequestError(f"{name} must be True or False, not {value!r}", field=name)
    if filename is not None and not isinstance(filename, str):
        raise InvalidRequestError(f"filename must be a string, not {type(filename).__name__}", field="filename")


class RemovalFormReader:
    """Incremental parser of the ``/remove`` form.

    Args:
        content_type: the request's ``Content-Type`` header.
        max_file_bytes: largest accepted ``image`` part.
        declared_length: the ``Content-Length``, used to report the size in a 413 that is raised
            before the whole body was read.

    Raises:
        InvalidRequestError: not multipart, malformed, a field missing, duplicated or invalid.
        FileTooLargeError: the ``image`` part exceeds ``max_file_bytes``, or the whole body exceeds
            it by more than the form's framing could need (data after the closing boundary too).
    """

    def __init__(self, content_type: str | None, *, max_file_bytes: int, declared_length: int | None = None):
        media_type, params = parse_options_header(content_type or "")
        boundary = params.get(b"boundary")
        if media_type != b"multipart/form-data" or not boundary:
            raise InvalidRequestError(_EXPECTED)
        self._max_file_bytes = max_file_bytes
        self._declared_length = declared_length
        self._body_bytes = 0
        self._parts: dict[str, list[tuple[bytes, str | None, str | None]]] = {}
        self._part_count = 0
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._headers: dict[str, bytes] = {}
        self._name: str | None = None
        self._filename: str | None = None  # the part's filename parameter: None for a plain field
        self._chunks: list[bytes] = []
        self._size = 0
        self._finished = False
        try:
            self._parser = MultipartParser(
                boundary,
                callbacks={
                    "on_part_begin": self._on_part_begin,
                    "on_header_field": self._on_header_field,
                    "on_header_value": self._on_header_value,
                    "on_header_end": self._on_header_end,
                    "on_headers_finished": self._on_headers_finished,
                    "on_part_data": self._on_part_data,
                    "on_part_end": self._on_part_end,
                    "on_end": self._on_end,
                },
            )
        except FormParserError as exc:  # e.g. a boundary longer than the parser's 256 bytes
            raise InvalidRequestError(f"Malformed multipart boundary: {_EXPECTED}") from exc

    def feed(self, chunk: bytes) -> None:
        """Parse the next piece of the body."""
        self._body_bytes += len(chunk)
        if self._body_bytes > _max_body_bytes(self._max_file_bytes):  # a chunked body declares no size
            raise file_too_large(self._body_bytes, self._max_file_bytes)
        try:
            self._parser.write(chunk)
        except MultipartParseError as exc:
            raise InvalidRequestError(f"Malformed multipart body: {_EXPECTED}") from exc

    def finish(self) -> RemovalForm:
        """Validate the complete form."""
        try:
            self._parser.finalize()
        except MultipartParseError as exc:
            raise InvalidRequestError(f"Malformed multipart body: {_EXPECTED}") from exc
        if not self._finished:
            raise InvalidRequestError(f"Incomplete multipart body: {_EXPECTED}")
        images = self._parts.get("image", [])
        if not images:
            files = [name for name, parts in self._parts.items() if any(f is not None for _, f, _ in parts)]
            sent = f" (a file came as '{files[0]}'; send it as 'image')" if files else ""
            raise InvalidRequestError(f"Missing form field 'image'{sent}", field="image")
        data, filename, content_type = images[0]
        if not data:
            raise InvalidRequestError("Form field 'image' is empty", field="image")
        smoothing = self._flag("smoothing", default=True)
        refine_foreground = self._flag("refine_foreground", default=True)
        return_base64 = self._flag("return_base64", default=False)
        return RemovalForm(
            image=UploadedImage(data=data, filename=filename, content_type=content_type),
            options=RemovalOptions(smoothing=smoothing, refine_foreground=refine_foreground),
            return_base64=return_base64,
        )

    def _flag(self, name: str, *, default: bool) -> bool:
        """An empty value counts as not sent, as in FastAPI's forms (an HTML form posts its empty
        text inputs)."""
        values = self._parts.get(name)
        return parse_form_bool(name, values[0][0]) if values and values[0][0].strip() else default

    # -- parser callbacks ---------------------------------------------------------------------

    def _on_part_begin(self) -> None:
        self._part_count += 1
        if self._part_count > _MAX_PARTS:
            raise InvalidRequestError(f"Too many form fields (at most {_MAX_PARTS})")
        self._headers = {}
        self._name = None
        self._filename = None
        self._chunks = []
        self._size = 0

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        self._headers[bytes(self._header_field).decode("latin-1").lower()] = bytes(self._header_value)
        self._header_field.clear()
        self._header_value.clear()

    def _on_headers_finished(self) -> None:
        disposition, params = parse_options_header(self._headers.get("content-disposition", b""))
        name = params.get(b"name")
        if disposition != b"form-data" or name is None:
            raise InvalidRequestError(f"A form part has no name: {_EXPECTED}")
        self._name = name.decode("utf-8", errors="replace")
        if self._name in _SINGLE_FIELDS and self._name in self._parts:  # before buffering a second copy
            raise InvalidRequestError(f"Form field '{self._name}' must appear once", field=self._name)
        filename = params.get(b"filename")
        self._filename = filename.decode("utf-8", errors="replace") if filename is not None else None

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        self._size += end - start
        if self._name == "image":
            if self._size > self._max_file_bytes:
                raise file_too_large(max(self._size, self._declared_length or 0), self._max_file_bytes)
        elif self._size > _MAX_FIELD_BYTES:
            if self._filename is not None:  # curl -F file=@photo.jpg: the usual slip
                raise InvalidRequestError(f"Unexpected file field '{self._name}': {_EXPECTED}", field="image")
            raise InvalidRequestError(f"Form field '{self._name}' is too long", field=self._name)
        self._chunks.append(data[start:end])

    def _on_part_end(self) -> None:
        name = self._name
        if name is None:
            raise InvalidRequestError(f"A form part has no name: {_EXPECTED}")
        content_type = self._headers.get("content-type")
        self._parts.setdefault(name, []).append(
            (
                b"".join(self._chunks),
                self._filename,
                content_type.decode("latin-1").strip() if content_type else None,
            )
        )
        self._chunks = []

    def _on_end(self) -> None:
        self._finished = True
