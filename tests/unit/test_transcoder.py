"""The journal's transcoder writes the library's JSON transcoder's bytes exactly (pure)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    TranscodingNotRegisteredError,
    UUIDAsHex,
)
from eventsourcing.utils import get_topic
from hypothesis import given
from hypothesis import strategies as st

from caljournal.adapters.journal import Journal, SQLiteJournalRecorder
from caljournal.adapters.transcoder import JournalTranscoder


def _registered(transcoder: JSONTranscoder) -> JSONTranscoder:
    for transcoding in (UUIDAsHex(), DatetimeAsISO(), DecimalAsStr()):
        transcoder.register(transcoding)
    return transcoder


LIBRARY = _registered(JSONTranscoder())
OURS = _registered(JournalTranscoder())

ZONES = st.sampled_from([None, UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-9.5))])
LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and the infinities included, as the library allows them
    | st.text()  # lone surrogates included
    | st.uuids()
    | st.builds(lambda moment, zone: moment.replace(tzinfo=zone), st.datetimes(), ZONES)
    | st.decimals(allow_nan=False)
)
TREES = st.recursive(
    LEAVES,
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@given(TREES)
def test_the_bytes_are_the_librarys(tree: Any) -> None:
    assert OURS.encode(tree) == LIBRARY.encode(tree)


@given(st.dictionaries(st.text(max_size=8), TREES, max_size=6))
def test_what_it_writes_reads_back_as_the_library_reads_it(state: dict[str, Any]) -> None:
    decoded = OURS.decode(OURS.encode(state))
    assert _same(decoded, LIBRARY.decode(LIBRARY.encode(state)))


def test_an_unregistered_type_is_refused_as_the_library_refuses_it() -> None:
    with pytest.raises(TranscodingNotRegisteredError, match="not serializable"):
        OURS.encode({"at": object()})
    with pytest.raises(TranscodingNotRegisteredError, match="not serializable"):
        LIBRARY.encode({"at": object()})


def test_the_journal_encodes_with_it(tmp_path: Path) -> None:
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        "SQLITE_DBNAME": str(tmp_path / "journal.sqlite"),
        "APPLICATION_RECORDER_TOPIC": get_topic(SQLiteJournalRecorder),
        "CREATE_TABLE": "y",
    }
    journal = Journal(env=env)
    try:
        assert isinstance(journal.mapper.transcoder, JournalTranscoder)
        at = datetime(2026, 5, 4, 3, 2, 1, tzinfo=UTC)
        assert journal.mapper.transcoder.encode({"at": at}) == LIBRARY.encode({"at": at})
    finally:
        journal.close()


def _same(left: Any, right: Any) -> bool:
    """Equal, with NaN equal to itself (a float that is not a number never equals itself)."""
    if isinstance(left, float) and isinstance(right, float):
        return left == right or (math.isnan(left) and math.isnan(right))
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(_same(left[k], right[k]) for k in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(_same, left, right))
    return bool(left == right)
