"""One REPORT or PROPFIND to a calendar collection, through the caldav client's guarded session.

The reader (``adapters.calendar_reader``) decides what to ask a calendar and
what the answers mean; here they are asked. Every request goes through the
client's session (size caps, deadlines, address checks: ``adapters.transport``).
A REPORT's answer comes back as bytes for the streamed multistatus reader
(``adapters.multistatus``), not through the library's answer object, which
would parse the whole body into one tree first; a PROPFIND's, which is small,
as an XML tree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from lxml import etree

from caljournal.adapters.caldav_client import (
    NotCalDAVError,
    check_response,
    request,
    translate,
)
from caljournal.adapters.multistatus import Answer, Member, MultistatusError, read_multistatus
from caljournal.adapters.storage import SyncTokenInvalid
from caljournal.adapters.transport import DISCOVERY

T = TypeVar("T")

#: A PROPFIND for the collection's CTag and sync token (also what a 401 is answered after).
CTAG_BODY = (
    b'<?xml version="1.0" encoding="utf-8"?><d:propfind xmlns:d="DAV:" '
    b'xmlns:cs="http://calendarserver.org/ns/"><d:prop><cs:getctag/><d:sync-token/>'
    b"</d:prop></d:propfind>"
)
NS = {"d": "DAV:", "cs": "http://calendarserver.org/ns/"}


@dataclass(frozen=True)
class _Status:
    """The parts of an answer ``check_response`` reads."""

    status: int
    headers: Any


def report(
    client: Any,
    calendar_url: str,
    body: bytes,
    depth: str,
    kind: str,
    seconds: float | None,
    what: str,
    token: str | None,
    call: Callable[[Callable[[], Any]], Any],
) -> bytes:
    """Send one REPORT to the calendar; return the multistatus body.

    A 401 to a client that has no credentials set yet is answered by one
    PROPFIND (``call`` runs it, retried as the reader's policy says), through
    which the library finds out how the server wants them; then it is asked again.

    :raises SyncTokenInvalid: when ``token`` was sent and the server refuses it.
    """
    session = client.session
    headers = {
        **client.headers,
        "Depth": depth,
        "Content-Type": "application/xml; charset=utf-8",
    }
    for attempt in range(2):
        with translate(what), session.kind(kind, seconds):
            response = session.request(
                "REPORT",
                calendar_url,
                data=body,
                headers=headers,
                auth=client.auth,
                timeout=client.timeout,
                verify=client.ssl_verify_cert,
                cert=client.ssl_cert,
            )
            content = response.content or b""
        if response.status_code == 401 and client.auth is None and attempt == 0:
            propfind(client, calendar_url, DISCOVERY, "0", CTAG_BODY, what, call)
            continue
        break
    status = int(response.status_code)
    if (
        token is not None
        and status in (403, 409, 412)
        and (b"valid-sync-token" in content or status == 412)
    ):
        raise SyncTokenInvalid("the server no longer knows the sync token", status=status)
    check_response(_Status(status, response.headers), what, (207,))
    return bytes(content)


def propfind(
    client: Any,
    calendar_url: str,
    kind: str,
    depth: str,
    body: bytes,
    what: str,
    call: Callable[[Callable[[], Any]], Any],
) -> Any:
    """Send one PROPFIND to the calendar (``call`` runs it, with retries); return its XML tree."""

    def ask() -> Any:
        with client.session.kind(kind):
            return request(
                client,
                calendar_url,
                "PROPFIND",
                what,
                body=body,
                headers={"Depth": depth, "Content-Type": "application/xml; charset=utf-8"},
                ok=(207,),
            )

    return xml(call(ask).raw, what)


def read(raw: bytes, what: str, collection: str | None = None) -> Iterator[Member | Answer]:
    """Read a multistatus answer as a stream (see ``read_multistatus``).

    :raises NotCalDAVError: when it is not a well-formed multistatus.
    """
    try:
        yield from read_multistatus(raw, collection)
    except MultistatusError:
        raise NotCalDAVError(f"the server's answer was not CalDAV XML while {what}") from None


def etag(value: Any) -> str | None:
    """Return an ETag as the answer gave it, stripped; None when it gave none."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def xml(raw: Any, what: str) -> Any:
    """Parse a multistatus answer.

    :raises NotCalDAVError: when it is not XML.
    """
    try:
        return etree.fromstring(raw.encode() if isinstance(raw, str) else bytes(raw))
    except (etree.XMLSyntaxError, ValueError):
        raise NotCalDAVError(f"the server's answer was not CalDAV XML while {what}") from None
