"""Multistatus answers read as a stream; REPORT bodies that ask only for ETag and data."""

from __future__ import annotations

import pytest
from lxml import etree

from caljournal.adapters.multistatus import (
    Answer,
    Member,
    MultistatusError,
    multiget_body,
    read_multistatus,
    sync_collection_body,
)

DATA = "BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID:a\nEND:VEVENT\nEND:VCALENDAR\n"


def answer(*responses: str, token: str | None = "tok-2") -> bytes:
    """Return a multistatus body of ``responses`` with a sync token."""
    tail = f"<d:sync-token>{token}</d:sync-token>" if token else ""
    return (
        '<d:multistatus xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav">'
        + "".join(responses)
        + tail
        + "</d:multistatus>"
    ).encode()


def found(href: str, etag: str, data: str | None) -> str:
    """Return a response with an ETag and (when given) calendar data."""
    prop = f"<d:getetag>{etag}</d:getetag>"
    missing = ""
    if data is None:
        missing = (
            "<d:propstat><d:prop><c:calendar-data/></d:prop>"
            "<d:status>HTTP/1.1 404 Not Found</d:status></d:propstat>"
        )
    else:
        prop += f"<c:calendar-data>{data}</c:calendar-data>"
    return (
        f"<d:response><d:href>{href}</d:href><d:propstat><d:prop>{prop}</d:prop>"
        f"<d:status>HTTP/1.1 200 OK</d:status></d:propstat>{missing}</d:response>"
    )


def gone(href: str, status: int = 404) -> str:
    """Return a response naming an href with only a status."""
    return (
        f"<d:response><d:href>{href}</d:href><d:status>HTTP/1.1 {status} X</d:status></d:response>"
    )


def test_members_carry_etag_and_data_and_the_answer_its_token() -> None:
    items = list(
        read_multistatus(answer(found("/cal/a.ics", '"1"', DATA), found("/cal/b.ics", '"2"', None)))
    )

    assert items[:2] == [
        Member("/cal/a.ics", None, '"1"', DATA.encode()),
        Member("/cal/b.ics", None, '"2"', None),
    ]
    assert items[2] == Answer(members=[], token="tok-2", truncated=False)


def test_a_deleted_member_has_its_status_and_a_507_on_the_collection_marks_truncation() -> None:
    body = answer(gone("/cal/x.ics"), gone("/cal/", 507))

    *members, last = read_multistatus(body, "/cal/")

    assert members == [Member("/cal/x.ics", 404, None, None)]
    assert isinstance(last, Answer) and last.truncated and last.token == "tok-2"


def test_a_body_that_is_not_xml_is_refused() -> None:
    with pytest.raises(MultistatusError):
        list(read_multistatus(b"<d:multistatus xmlns:d='DAV:'><d:response>"))


@pytest.mark.parametrize("with_data", [True, False])
def test_a_sync_collection_asks_for_the_etag_and_data_only_and_escapes_the_token(
    with_data: bool,
) -> None:
    root = etree.fromstring(sync_collection_body("a<b&c", with_data))

    asked = [child.tag for child in root.find("{DAV:}prop")]
    assert root.findtext("{DAV:}sync-token") == "a<b&c"
    expected = ["{DAV:}getetag"] + (["{urn:ietf:params:xml:ns:caldav}calendar-data"] * with_data)
    assert asked == expected


def test_a_multiget_names_each_path_and_asks_for_nothing_else() -> None:
    root = etree.fromstring(multiget_body(["/cal/a.ics", "/cal/b%40x.ics"]))

    assert [h.text for h in root.findall("{DAV:}href")] == ["/cal/a.ics", "/cal/b%40x.ics"]
    assert [child.tag for child in root.find("{DAV:}prop")] == [
        "{DAV:}getetag",
        "{urn:ietf:params:xml:ns:caldav}calendar-data",
    ]
