"""kvstore.model: key validation (its printable-ASCII fast path and the slow path give the
same answers) and the entry digest stored in each row."""

from __future__ import annotations

import hashlib

import pytest

from kvstore.errors import InvalidKey, TooLarge
from kvstore.model import entry_digest, entry_hash, hash_bytes, validate_key


@pytest.mark.parametrize("key", ["a", "bench/put/00000001", " ~!", "k" * 16, "é/ключ", "a b"])
def test_valid_keys(key: str) -> None:
    validate_key(key, 64)


@pytest.mark.parametrize("cp", [0x00, 0x09, 0x0A, 0x1F, 0x7F, 0x80, 0x85, 0x9F])
def test_control_characters_are_refused_in_ascii_and_beyond(cp: int) -> None:
    with pytest.raises(InvalidKey, match=f"U\\+{cp:04X}"):
        validate_key(f"a{chr(cp)}b", 64)


def test_a_lone_surrogate_is_not_utf8() -> None:
    with pytest.raises(InvalidKey, match="not valid UTF-8"):
        validate_key("a\udc80", 64)


def test_the_size_limit_holds_on_the_fast_path_and_counts_bytes() -> None:
    validate_key("k" * 10, 10)
    with pytest.raises(TooLarge) as caught:
        validate_key("k" * 11, 10)  # printable ASCII: the fast path must not skip the limit
    assert caught.value.details["size"] == 11
    with pytest.raises(TooLarge):
        validate_key("é" * 6, 10)  # 6 characters, 12 bytes
    with pytest.raises(InvalidKey, match="empty"):
        validate_key("", 10)


@pytest.mark.parametrize(("key", "value"), [("a", b""), ("bench/put/1", b"x" * 100), ("é", b"\0")])
def test_entry_digest_is_the_stored_form_of_entry_hash(key: str, value: bytes) -> None:
    kb = key.encode()
    expected = hashlib.blake2b(len(kb).to_bytes(4, "big") + kb + value, digest_size=16).digest()
    assert entry_digest(key, value) == expected
    assert entry_hash(key, value) == int.from_bytes(expected, "big")
    assert hash_bytes(entry_hash(key, value)) == expected
