"""WebDAV REPORT bodies that ask only for what caljournal reads, and a streaming reader of answers.

Only two properties of a calendar object are ever used: its ETag and its
calendar data. Asking for more costs some servers dearly (DAViCal takes about a
second per multiget that also asks for ``schedule-tag``), so the bodies here
name exactly those two. Answers are read with ``lxml.etree.iterparse``, one
``response`` element at a time, each cleared once read: a first sync of a large
calendar never holds a whole parsed tree next to its body.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from xml.sax.saxutils import escape

from lxml import etree

DAV = "{DAV:}"
CALDAV = "{urn:ietf:params:xml:ns:caldav}"
_PROP = b"<d:prop><d:getetag/><c:calendar-data/></d:prop>"
_ETAG_ONLY = b"<d:prop><d:getetag/></d:prop>"
_HEAD = (
    b'<?xml version="1.0" encoding="utf-8"?>'
    b'<{root} xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav">'
)


class MultistatusError(ValueError):
    """The answer is not a well-formed WebDAV multistatus."""


@dataclass(frozen=True)
class Member:
    """One ``response`` of a multistatus: an href, its status and what was found.

    ``status`` is the response's own status (404: deleted or missing), None when
    the answer gave properties instead; ``data`` is None when the server sent no
    calendar data (it was not asked for, or the server ignores the request).
    """

    href: str
    status: int | None
    etag: str | None
    data: bytes | None


@dataclass
class Answer:
    """Members of a multistatus as read so far, its sync token, and whether it was truncated."""

    members: list[Member]
    token: str | None = None
    truncated: bool = False


def sync_collection_body(token: str | None, with_data: bool) -> bytes:
    """Return a sync-collection REPORT asking for ETags (and calendar data when ``with_data``)."""
    head = _HEAD.replace(b"{root}", b"d:sync-collection")
    value = escape(token).encode("utf-8") if token else b""
    return (
        head
        + b"<d:sync-token>"
        + value
        + b"</d:sync-token><d:sync-level>1</d:sync-level>"
        + (_PROP if with_data else _ETAG_ONLY)
        + b"</d:sync-collection>"
    )


def multiget_body(paths: Iterable[str]) -> bytes:
    """Return a calendar-multiget REPORT for ``paths`` (as they go on the wire) asking for both."""
    head = _HEAD.replace(b"{root}", b"c:calendar-multiget")
    hrefs = b"".join(b"<d:href>" + escape(p).encode("utf-8") + b"</d:href>" for p in paths)
    return head + _PROP + hrefs + b"</c:calendar-multiget>"


def calendar_query_body() -> bytes:
    """Return a calendar-query REPORT for every object's ETag and data (no filter but VCALENDAR)."""
    head = _HEAD.replace(b"{root}", b"c:calendar-query")
    return (
        head + _PROP + b'<c:filter><c:comp-filter name="VCALENDAR"/></c:filter></c:calendar-query>'
    )


def _status(text: str | None) -> int | None:
    """Return the code of an HTTP status line ("HTTP/1.1 404 Not Found" → 404)."""
    if not text:
        return None
    parts = text.split()
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


def _member(element: etree._Element) -> Member:
    href = (element.findtext(f"{DAV}href") or "").strip()
    status = _status(element.findtext(f"{DAV}status"))
    etag = data = None
    for propstat in element.iterfind(f"{DAV}propstat"):
        if _status(propstat.findtext(f"{DAV}status")) != 200:
            continue
        found_etag = propstat.findtext(f"{DAV}prop/{DAV}getetag")
        if found_etag and found_etag.strip():
            etag = found_etag.strip()
        text = propstat.findtext(f"{DAV}prop/{CALDAV}calendar-data")
        if text is not None and text.strip():
            data = text.encode("utf-8")
    return Member(href, status, etag, data)


def read_multistatus(body: bytes, collection: str | None = None) -> Iterator[Member | Answer]:
    """Yield each member of a multistatus as it is parsed, then an :class:`Answer` with its token.

    The final :class:`Answer` has no members (they were yielded); it says
    whether the server truncated the answer (507 on ``collection``, the path
    of the collection asked, RFC 6578 §3.6).

    :raises MultistatusError: when the body is not a well-formed multistatus.
    """
    answer = Answer(members=[])
    events = etree.iterparse(
        io.BytesIO(body),
        events=("end",),
        tag=(f"{DAV}response", f"{DAV}sync-token"),
        resolve_entities=False,
        no_network=True,
    )
    try:
        for _, element in events:
            parent = element.getparent()
            if element.tag == f"{DAV}sync-token":
                if parent is not None and parent.tag == f"{DAV}multistatus":
                    answer.token = (element.text or "").strip() or None
                continue
            member = _member(element)
            # Free what was read: the tree never grows past one response.
            element.clear()
            if parent is not None:
                while element.getprevious() is not None:
                    del parent[0]
            if member.status == 507 and (collection is None or _same(member.href, collection)):
                answer.truncated = True
                continue
            yield member
    except etree.XMLSyntaxError as exc:
        raise MultistatusError(f"the answer is not well-formed XML: {exc}") from None
    yield answer


def _same(href: str, collection: str) -> bool:
    return href.rstrip("/").endswith(collection.rstrip("/")) or not href


__all__ = [
    "Answer",
    "Member",
    "MultistatusError",
    "calendar_query_body",
    "multiget_body",
    "read_multistatus",
    "sync_collection_body",
]
