"""Make an API key and the SHA-256 entry the service stores for it (never the key itself).

    python scripts/hash_api_key.py --tier pro                 # new random key, printed once
    printf %s "$KEY" | python scripts/hash_api_key.py --stdin --tier basic

Prints the key (when generated) to stderr and the registry entry ``<sha256 hex> <tier>`` to stdout,
ready to append to the key file named by ``api_keys.file`` or to the variable named by
``api_keys.env_var``, or to paste into ``api_keys.hashes`` as ``"<sha256 hex>": <tier>``.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from serve_app.api_keys import hash_api_key  # noqa: E402

_KEY_BYTES = 32
# A key of your own must not be guessable: the service answers every wrong key with a 401 and counts
# none of them (docs/deployment.md: rate-limit 401s at the edge). 16 random URL-safe characters
# carry 96 bits; the generated keys have 43 (256 bits).
MIN_KEY_CHARACTERS = 16


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tier", default=None, help="rate tier of the key (default: the config's default_tier)")
    parser.add_argument("--stdin", action="store_true", help="hash the key read from stdin instead of making one")
    args = parser.parse_args(argv)
    if args.stdin:
        key = sys.stdin.read().strip()
        if not key:
            parser.error("no key on stdin")
        if len(key) < MIN_KEY_CHARACTERS:
            parser.error(f"a key of {len(key)} characters is guessable; use at least {MIN_KEY_CHARACTERS} "
                         "random ones, or let this script make one")
    else:
        key = secrets.token_urlsafe(_KEY_BYTES)
        print(f"API key (give it to the client; it is not stored anywhere): {key}", file=sys.stderr)
    entry = hash_api_key(key) if args.tier is None else f"{hash_api_key(key)} {args.tier}"
    print(entry)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
