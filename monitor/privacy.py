"""Personal data never leaves in clear (design §6, DEVELOPERS standards).

Certificate numbers (``certno``), names (``psn_name``) and person numbers (``psn_no``) are replaced in
every output (alerts, tickets, ClickHouse rows, logs) by a keyed hash (HMAC-SHA256 under the
deployment's secret ``MONITOR_PII_KEY``) or a mask. The keyed hash lets an inspector who holds the key
re-identify a person from the original data; without the key it reveals nothing, and it is stable, so
the same person links across alerts.

Cost (issue #16): a token is one HMAC over ``kind|value``. The HMAC keyed with the secret and fed the
``kind|`` prefix is made once per kind and *copied* per token (the same bytes as ``hmac.new(key,
f"{kind}|{value}")``, without re-deriving the key pads each time), and ``person`` remembers the last
``PERSON_MEMO`` persons' tokens (a settlement and its prescription name the same person). That memo lives
in the pseudonymizer's memory only: it is never pickled (a checkpoint keeps the key's fingerprint alone),
never printed, and is dropped whole when full or when the key changes.
"""

from __future__ import annotations

import hashlib
import hmac

#: Public, for ``monitor demo`` and tests only (library default of ``Pseudonymizer()``). The shells never
#: fall back to it: ``Settings.pseudonymizer`` takes ``MONITOR_PII_KEY`` or a generated, stored key.
DEV_KEY = b"medins-monitor-dev-key-not-secret"

#: persons whose tokens ``Pseudonymizer.person`` remembers (then it starts over): ≈ 6 MB at most
PERSON_MEMO = 1 << 15


class KeyMismatch(ValueError):
    """State made under another ``MONITOR_PII_KEY`` (a rotated key): its person tokens would not match."""


def key_fingerprint(key: bytes) -> str:
    """A public name of a key (16 hex chars of HMAC(key, "fingerprint")): reveals nothing about it."""
    return hmac.new(key, b"medins-monitor key fingerprint", hashlib.sha256).hexdigest()[:16]


class Pseudonymizer:
    """Keyed hashing and masking of personal identifiers.

    Pickling keeps only the key's fingerprint, never the key (checkpoints hold no secret): a restored
    pseudonymizer is *unkeyed* until ``Engine.restore`` hands it the current key, which must have the
    same fingerprint (``KeyMismatch`` otherwise). An unpickled dev-key pseudonymizer re-keys itself
    (the dev key is public; demo and tests)."""

    __slots__ = ("_key", "_keyed_kinds", "_persons", "fingerprint")

    def __init__(self, key: bytes | str = DEV_KEY) -> None:
        self._key: bytes | None = key.encode() if isinstance(key, str) else key
        if not self._key:
            raise ValueError("empty MONITOR_PII_KEY")
        self.fingerprint = key_fingerprint(self._key)
        self._forget()

    def _forget(self) -> None:
        """Drop what was derived from the key (the per-kind HMACs, the person memo)."""
        #: kind → HMAC(key) already fed ``kind|`` (copied per token)
        self._keyed_kinds: dict[str, hmac.HMAC] = {}
        #: psn_no → its token: in memory only (never pickled, never printed; see the module docstring)
        self._persons: dict[str, str] = {}

    def __repr__(self) -> str:  # never print the key
        return f"Pseudonymizer(<key {self.fingerprint}>)"

    def __getstate__(self) -> str:
        return self.fingerprint

    def __setstate__(self, state: str) -> None:
        if not isinstance(state, str):
            raise TypeError("a checkpoint from before keys were kept out of state: start a new state")
        self.fingerprint = state
        self._key = DEV_KEY if state == key_fingerprint(DEV_KEY) else None
        self._forget()

    @property
    def keyed(self) -> bool:
        return self._key is not None

    def derive(self, purpose: str) -> bytes:
        """A subkey for another use of the same secret (e.g. signing checkpoints)."""
        return hmac.new(self._require(), f"medins-monitor {purpose}".encode(), hashlib.sha256).digest()

    def _require(self) -> bytes:
        if self._key is None:
            raise KeyMismatch("this pseudonymizer was restored without its key: pass the current "
                              "MONITOR_PII_KEY to Engine.restore")
        return self._key

    def token(self, kind: str, value: str | None) -> str | None:
        """``kind:`` + 16 hex chars of HMAC-SHA256(key, kind|value); ``None`` stays ``None``."""
        if value is None or value == "":
            return None
        keyed = self._keyed_kinds.get(kind)
        if keyed is None:
            keyed = self._keyed_kinds[kind] = hmac.new(self._require(), f"{kind}|".encode(), hashlib.sha256)
        mac = keyed.copy()
        mac.update(value.encode())
        return f"{kind}:{mac.hexdigest()[:16]}"

    def person(self, psn_no: str | None) -> str | None:
        """``token("psn", psn_no)``, remembered for the last ``PERSON_MEMO`` persons."""
        if psn_no is None:
            return None
        persons = self._persons
        found = persons.get(psn_no)
        if found is None:
            found = self.token("psn", psn_no)
            if found is None:
                return None
            if len(persons) >= PERSON_MEMO:
                persons.clear()
            persons[psn_no] = found
        return found


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
