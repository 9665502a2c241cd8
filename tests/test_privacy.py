"""``monitor.privacy``: the person tokens are HMAC-SHA256(key, kind|value) byte for byte (issue #16 made
them cheaper: a keyed HMAC copied per token and a person memo) and the memo never leaves the process."""

from __future__ import annotations

import hashlib
import hmac
import pickle

import pytest

from monitor import privacy
from monitor.privacy import DEV_KEY, KeyMismatch, Pseudonymizer


def _reference(key: bytes, kind: str, value: str) -> str:
    return f"{kind}:{hmac.new(key, f'{kind}|{value}'.encode(), hashlib.sha256).hexdigest()[:16]}"


@pytest.mark.parametrize("key", [DEV_KEY, b"k" * 64, b"long-" * 40, "密钥-str-key"])
def test_tokens_are_the_keyed_hash_of_kind_and_value(key: bytes | str) -> None:
    raw = key.encode() if isinstance(key, str) else key
    pseudo = Pseudonymizer(key)
    for value in ["42070219800101123X", "P0001", "张三", "x" * 200]:
        for _ in range(2):  # the second time from the memo / the copied HMAC
            assert pseudo.person(value) == _reference(raw, "psn", value)
            assert pseudo.token("cert", value) == _reference(raw, "cert", value)
    assert pseudo.person(None) is None and pseudo.person("") is None and pseudo.token("psn", "") is None


def test_the_person_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(privacy, "PERSON_MEMO", 3)
    pseudo = Pseudonymizer()
    for i in range(10):
        assert pseudo.person(f"P{i}") == _reference(DEV_KEY, "psn", f"P{i}")
        assert len(pseudo._persons) <= 3
    assert pseudo.person("P0") == _reference(DEV_KEY, "psn", "P0")


def test_a_pickled_pseudonymizer_keeps_no_person_and_no_key() -> None:
    pseudo = Pseudonymizer(b"secret-key-0123456789")
    token = pseudo.person("42070219800101123X")
    blob = pickle.dumps(pseudo)
    assert b"42070219800101123X" not in blob and b"secret-key" not in blob
    assert token is not None and token.encode() not in blob
    restored = pickle.loads(blob)
    assert not restored.keyed
    with pytest.raises(KeyMismatch):  # its memo did not survive either: no token without the key
        restored.person("42070219800101123X")
    assert "42070219800101123X" not in repr(pseudo)
