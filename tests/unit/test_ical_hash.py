"""Unit tests of the canonical forms behind the stored content hash (pure)."""

from __future__ import annotations

import hashlib
import json

from hypothesis import given
from hypothesis import strategies as st

from caljournal.adapters.ical_hash import canonical_line, digest_of

# Any text but lone surrogates, which no calendar object decoded from UTF-8 holds.
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
PARAMS = st.dictionaries(
    st.sampled_from(["cn", "ROLE", "Language", "x-name", "VALUE", "rsvp"]),
    TEXT | st.lists(TEXT, max_size=3),
    max_size=4,
)


@given(st.sampled_from(["SUMMARY", "STATUS", "X-CALJOURNAL-ID", "ATTENDEE"]), TEXT, PARAMS)
def test_a_canonical_line_is_the_json_it_was_first_stored_as(
    name: str, text: str, params: dict[str, str | list[str]]
) -> None:
    line = canonical_line(name, text, params.items())
    if line is None:  # an RFC default spelled out
        return
    shown = text.strip().upper() if name == "STATUS" else text
    pairs = [
        [key.upper(), _param(key, value)]
        for key, value in sorted(params.items())
        if key.upper() != "VALUE"
    ]
    assert line == json.dumps([name, pairs, shown], ensure_ascii=False)


@given(st.lists(st.lists(TEXT, max_size=5), max_size=4))
def test_a_digest_is_the_sha256_of_the_json_of_the_sorted_lines(events: list[list[str]]) -> None:
    canonical = json.dumps(sorted(sorted(lines) for lines in events), ensure_ascii=False)
    assert digest_of(events) == hashlib.sha256(canonical.encode()).hexdigest()


def _param(key: str, value: str | list[str]) -> str:
    text = ",".join(value) if isinstance(value, list) else value
    if key.upper() == "RSVP" or key.upper() == "ROLE":
        return text.upper()
    return text.lower() if key.upper() == "LANGUAGE" else text
