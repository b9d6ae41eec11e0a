"""Every key b24-mcp derives from `B24_CONFIRM_SECRET`: one function per purpose, all of them here.

Each is exactly the derivation that signed or sealed what is stored today, so nothing issued or sealed before is
invalidated (`tests/test_keys.py` opens values written by the earlier code):

- `confirmation_key`: the HMAC-SHA256 key of confirmation tokens, the secret's bytes as they are;
- `request_state_key`: the key that seals the SDK's request state (elicitation, 2026-07-28 era) across replicas,
  SHA-256 over a label and the secret;
- `grants_key`: AES-256-GCM key of the application's OAuth grant in the shared database, HKDF-SHA256
  ("b24-mcp grants v1");
- `people_key`: AES-256-GCM key of sign-in's people store in the shared database, HKDF-SHA256 ("b24-mcp people v1").

`cryptography` is imported only by the two HKDF derivations: the stdio server's cold start does not load it.
"""

from __future__ import annotations

import hashlib

KEY_BYTES = 32  # AES-256


def confirmation_key(confirm_secret: bytes) -> bytes:
    """The key that signs confirmation tokens (HMAC-SHA256)."""
    return confirm_secret


def request_state_key(confirm_secret: bytes) -> bytes:
    """The key replicas that share B24_CONFIRM_SECRET seal the SDK's request state with."""
    return hashlib.sha256(b"b24-mcp request state\n" + confirm_secret).digest()


def _hkdf(confirm_secret: bytes, label: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=label).derive(confirm_secret)


def grants_key(confirm_secret: bytes) -> bytes:
    """The key that seals stored tokens, derived from B24_CONFIRM_SECRET."""
    return _hkdf(confirm_secret, b"b24-mcp grants v1")


def people_key(confirm_secret: bytes) -> bytes:
    """The key that seals the people store's secrets, derived from B24_CONFIRM_SECRET (not the grants' key)."""
    return _hkdf(confirm_secret, b"b24-mcp people v1")
