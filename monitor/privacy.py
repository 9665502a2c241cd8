"""Personal data never leaves in clear (design §6, DEVELOPERS standards).

Certificate numbers (``certno``), names (``psn_name``) and person numbers (``psn_no``) are replaced in
every output (alerts, tickets, ClickHouse rows, logs) by a keyed hash (HMAC-SHA256 under the
deployment's secret ``MONITOR_PII_KEY``) or a mask. The keyed hash lets an inspector who holds the key
re-identify a person from the original data; without the key it reveals nothing, and it is stable, so
the same person links across alerts.
"""

from __future__ import annotations

import hashlib
import hmac

#: Used only when no key is configured (demo, tests). Production sets MONITOR_PII_KEY.
DEV_KEY = b"medins-monitor-dev-key-not-secret"


class Pseudonymizer:
    """Keyed hashing and masking of personal identifiers."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes | str = DEV_KEY) -> None:
        self._key = key.encode() if isinstance(key, str) else key

    def __repr__(self) -> str:  # never print the key
        return "Pseudonymizer(<key>)"

    def __getstate__(self) -> bytes:
        return self._key

    def __setstate__(self, state: bytes) -> None:
        self._key = state

    def token(self, kind: str, value: str | None) -> str | None:
        """``kind:`` + 16 hex chars of HMAC-SHA256(key, kind|value); ``None`` stays ``None``."""
        if value is None or value == "":
            return None
        digest = hmac.new(self._key, f"{kind}|{value}".encode(), hashlib.sha256).hexdigest()
        return f"{kind}:{digest[:16]}"

    def person(self, psn_no: str | None) -> str | None:
        return self.token("psn", psn_no)


def mask_certno(certno: str | None) -> str | None:
    """Keep the region prefix (first 4) and the last 2 characters: ``4207************12``."""
    if not certno:
        return None
    if len(certno) <= 6:
        return "*" * len(certno)
    return certno[:4] + "*" * (len(certno) - 6) + certno[-2:]


def mask_name(name: str | None) -> str | None:
    """Keep the family name only: ``张**``."""
    if not name:
        return None
    return name[0] + "*" * (len(name) - 1)
