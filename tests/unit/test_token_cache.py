"""The token cache: entries expire, only valid tokens are kept, clearing forgets all."""

from __future__ import annotations

from uuid import uuid4

from caljournal.accounts import Principal, TokenCache


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _principal() -> Principal:
    return Principal(uuid4(), "default", uuid4(), "acme")


def test_an_entry_is_returned_until_its_ttl_has_passed() -> None:
    clock = Clock()
    cache = TokenCache(1.5, clock)
    principal = _principal()
    cache.put("digest", principal)
    clock.now += 1.49
    assert cache.get("digest") is principal
    clock.now += 0.01
    assert cache.get("digest") is None
    clock.now -= 1.0  # an expired entry is gone, not merely hidden
    assert cache.get("digest") is None


def test_a_zero_ttl_keeps_nothing() -> None:
    cache = TokenCache(0.0, Clock())
    cache.put("digest", _principal())
    assert cache.get("digest") is None


def test_clear_forgets_every_entry() -> None:
    cache = TokenCache(60.0, Clock())
    cache.put("a", _principal())
    cache.put("b", _principal())
    cache.clear()
    assert cache.get("a") is None and cache.get("b") is None


def test_the_cache_stays_bounded() -> None:
    cache = TokenCache(60.0, Clock())
    for i in range(TokenCache.MAX_ENTRIES + 5):
        cache.put(f"d{i}", _principal())
    assert len(cache) <= TokenCache.MAX_ENTRIES
    last = f"d{TokenCache.MAX_ENTRIES + 4}"
    assert cache.get(last) is not None
