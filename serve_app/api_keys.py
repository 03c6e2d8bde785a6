"""The API key registry: who may call ``/remove`` (when keys are required) and at which rate tier.

Keys are never stored: the config, the key file and the environment variable hold the SHA-256 of
each key (``scripts/hash_api_key.py`` makes them). A presented ``X-API-Key`` is hashed and
compared with every stored digest by ``hmac.compare_digest``, without stopping at the first match,
so the time taken does not depend on which stored key (if any) the presented one resembles.

One registry serves both purposes: :meth:`ApiKeyRegistry.authenticate` gates the request and
returns the client's :class:`KeyMatch`, whose tier and non-secret id the rate limiter counts by.

Entry format, in the key file (one per line) and in the environment variable (separated by
newlines or commas)::

    <64 hex digits of sha256(key)> [tier]      # '#' starts a comment; no tier: the default tier
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pipelines.errors import UnauthorizedError
from serve_app.args import ApiKeysArgs

_HEX_DIGEST = re.compile(r"^[0-9a-f]{64}$")
# Characters of the digest that name a key's client in the rate limiter and the logs: enough to
# tell keys apart, too few to help anyone guess the key.
_CLIENT_ID_CHARS = 12


class ApiKeyConfigError(ValueError):
    """A key file or key variable that cannot be read or parsed (fails the deploy)."""


@dataclass(frozen=True)
class KeyMatch:
    """A recognised key: ``client_id`` is a digest prefix (never the key), ``tier`` its rate tier."""

    client_id: str
    tier: str


def _key_digest(key: str) -> bytes:
    # surrogateescape: a header that is not valid UTF-8 still hashes (and matches nothing).
    return hashlib.sha256(key.encode("utf-8", errors="surrogateescape")).digest()


def hash_api_key(key: str) -> str:
    """The stored form of ``key``: lowercase hex SHA-256 of its UTF-8 bytes."""
    return _key_digest(key).hex()


def parse_key_entries(text: str, default_tier: str, source: str) -> dict[str, str]:
    """``digest → tier`` from the entry format above. Raises ApiKeyConfigError naming ``source``."""
    entries: dict[str, str] = {}
    without_comments = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    for number, raw in enumerate(re.split(r"[\n,]", without_comments), start=1):
        line = raw.strip()
        if not line:
            continue
        parts = line.split()
        digest = parts[0].lower()
        if not _HEX_DIGEST.match(digest) or len(parts) > 2:
            raise ApiKeyConfigError(
                f"{source}, entry {number}: expected '<sha256 hex digest> [tier]' "
                "(hash keys with scripts/hash_api_key.py; never store the key itself)"
            )
        entries[digest] = parts[1] if len(parts) == 2 else default_tier
    return entries


@dataclass(frozen=True)
class ApiKeyRegistry:
    """Stored key digests and their tiers.

    Attributes:
        digests: ``(sha256 digest bytes, tier)`` per key.
        required: refuse ``/remove`` (401 UNAUTHORIZED) without a listed key.
    """

    digests: tuple[tuple[bytes, str], ...] = ()
    required: bool = False

    @classmethod
    def from_hex(cls, entries: Mapping[str, str], required: bool) -> ApiKeyRegistry:
        return cls(tuple((bytes.fromhex(digest), tier) for digest, tier in sorted(entries.items())), required)

    @property
    def tiers(self) -> frozenset[str]:
        return frozenset(tier for _, tier in self.digests)

    def lookup(self, presented: str | None) -> KeyMatch | None:
        """The entry of ``presented``, in time independent of which stored key it resembles."""
        if not presented:
            return None
        digest = _key_digest(presented)
        match: KeyMatch | None = None
        for stored, tier in self.digests:
            if hmac.compare_digest(stored, digest):
                match = KeyMatch(digest.hex()[:_CLIENT_ID_CHARS], tier)
        return match

    def authenticate(self, presented: str | None) -> KeyMatch | None:
        """The caller's key entry; None for an anonymous caller when keys are optional.

        Raises:
            UnauthorizedError: keys are required and ``presented`` is missing or not listed (401).
        """
        match = self.lookup(presented)
        if match is None and self.required:
            detail = "Invalid API key" if presented else "Missing API key: send it in the X-API-Key header"
            raise UnauthorizedError(detail)
        return match


def load_key_registry(args: ApiKeysArgs, default_tier: str, environ: Mapping[str, str]) -> ApiKeyRegistry:
    """Read the registry once, at deploy time, from the config, the key file and the variable.

    Args:
        args: the ``api_keys`` block of the config.
        default_tier: the tier of entries that name none.
        environ: the environment to read ``args.env_var`` from (``os.environ`` in the builder).

    Raises:
        ApiKeyConfigError: the file or variable is missing or malformed, or keys are required and
            none is configured (a service nobody can call is a configuration mistake).
    """
    entries = dict(args.hashes)
    sources: list[tuple[str, str]] = []
    if args.file is not None:
        path = Path(args.file).expanduser()
        try:
            sources.append((path.read_text(encoding="utf-8"), f"api_keys.file {path}"))
        except OSError as exc:
            raise ApiKeyConfigError(f"api_keys.file {path} cannot be read: {exc.strerror}") from None
    if args.env_var is not None:
        if args.env_var not in environ:
            raise ApiKeyConfigError(f"api_keys.env_var: the environment variable {args.env_var} is not set")
        sources.append((environ[args.env_var], f"environment variable {args.env_var}"))
    for text, source in sources:
        entries.update(parse_key_entries(text, default_tier, source))
    if args.required and not entries:
        raise ApiKeyConfigError("api_keys.required is true but no key digest is configured")
    return ApiKeyRegistry.from_hex(entries, args.required)


def unknown_tiers(registry: ApiKeyRegistry, tiers: Iterable[str]) -> list[str]:
    """Tiers the registry names that the rate limiter does not define."""
    return sorted(registry.tiers - set(tiers))
