"""Find the calendars behind whatever URL, domain or e-mail address a user typed.

The user's input is normalised into candidate URLs (``adapters.calendar_url``);
each is asked over WebDAV what it is: a calendar, a calendar home, a principal,
or just a server that knows the current user's principal. The answer lists the
calendars found and says, in sentences, which URL was used and why.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

from caldav.discovery import discover_caldav
from caldav.elements import cdav, dav, ical
from lxml import etree

from caljournal.adapters.caldav_client import (
    AuthenticationFailedError,
    CalDAVError,
    NotCalDAVError,
    ServerAccess,
    open_client,
    request,
)
from caljournal.adapters.calendar_url import Candidate, normalise, redact_url
from caljournal.adapters.providers import ProviderProfile, is_partition_host

NS = {"d": "DAV:", "c": "urn:ietf:params:xml:ns:caldav", "a": "http://apple.com/ns/ical/"}
_PROPS = [
    dav.ResourceType(),
    dav.DisplayName(),
    dav.CurrentUserPrincipal(),
    cdav.CalendarHomeSet(),
    cdav.SupportedCalendarComponentSet(),
    dav.SupportedReportSet(),
    dav.CurrentUserPrivilegeSet(),
    ical.CalendarColor(),
]


@dataclass(frozen=True)
class CalendarInfo:
    """One calendar collection as the server describes it."""

    url: str
    name: str | None
    color: str | None
    accepts_events: bool
    sync_tokens: bool
    writable: bool | None

    def as_dict(self) -> dict[str, Any]:
        """Return the calendar as plain values."""
        return {
            "url": self.url,
            "name": self.name,
            "color": self.color,
            "accepts_events": self.accepts_events,
            "sync_tokens": self.sync_tokens,
            "writable": self.writable,
        }


@dataclass(frozen=True)
class Discovery:
    """What linking found: the URL used, why, the calendars, and the steps taken."""

    used_url: str
    reason: str
    principal_url: str | None
    home_url: str | None
    calendars: tuple[CalendarInfo, ...]
    selected: CalendarInfo | None
    steps: tuple[str, ...] = field(default=())

    def explanation(self) -> str:
        """Return one paragraph saying which URL was used and why."""
        text = f"Used {redact_url(self.used_url)}: {self.reason}."
        if self.selected:
            text += f" It is the calendar {self.selected.name or self.selected.url!r}, chosen."
        return text


@dataclass(frozen=True)
class _Resource:
    href: str
    props: Any  # the <d:prop> element of the 200 propstat

    def has_type(self, tag: str) -> bool:
        return self.props is not None and self.props.find(f"d:resourcetype/{tag}", NS) is not None

    def text(self, path: str) -> str | None:
        if self.props is None:
            return None
        node = self.props.find(path, NS)
        return node.text.strip() if node is not None and node.text else None

    def href_of(self, path: str) -> str | None:
        return self.text(f"{path}/d:href")


def _propfind(client: Any, url: str, depth: int, what: str) -> list[_Resource]:
    body = (dav.Propfind() + [dav.Prop() + list(_PROPS)]).xmlelement()
    response = request(
        client,
        url,
        "PROPFIND",
        what,
        body=etree.tostring(body, xml_declaration=True, encoding="utf-8"),
        headers={"Depth": str(depth), "Content-Type": "application/xml; charset=utf-8"},
        ok=(207,),
    )
    try:
        tree = etree.fromstring(
            response.raw.encode() if isinstance(response.raw, str) else response.raw
        )
    except (etree.XMLSyntaxError, ValueError):
        raise NotCalDAVError(f"the answer to {what} was not WebDAV XML") from None
    if tree is None or tree.tag != "{DAV:}multistatus":
        raise NotCalDAVError(f"the answer to {what} was not a WebDAV multistatus")
    resources = []
    for node in tree.findall("d:response", NS):
        href = node.findtext("d:href", default="", namespaces=NS).strip()
        props = None
        for propstat in node.findall("d:propstat", NS):
            status = propstat.findtext("d:status", default="", namespaces=NS)
            if " 200 " in status + " ":
                props = propstat.find("d:prop", NS)
        resources.append(_Resource(urljoin(url, href), props))
    return resources


def _calendar_info(resource: _Resource) -> CalendarInfo:
    components = (
        [
            c.get("name", "").upper()
            for c in resource.props.findall("c:supported-calendar-component-set/c:comp", NS)
        ]
        if resource.props is not None
        else []
    )
    reports = (
        {e.tag for e in resource.props.iterfind("d:supported-report-set//d:report/*", NS)}
        if resource.props is not None
        else set()
    )
    privileges = (
        {e.tag for e in resource.props.iterfind("d:current-user-privilege-set/d:privilege/*", NS)}
        if resource.props is not None
        else set()
    )
    writable: bool | None = None
    if privileges:
        writable = bool(
            privileges & {"{DAV:}write", "{DAV:}write-content", "{DAV:}all", "{DAV:}bind"}
        )
    return CalendarInfo(
        url=resource.href,
        name=resource.text("d:displayname"),
        color=resource.text("a:calendar-color"),
        accepts_events=not components or "VEVENT" in components,
        sync_tokens="{DAV:}sync-collection" in reports,
        writable=writable,
    )


def _same_site(a: str, b: str) -> bool:
    ha, hb = urlsplit(a).hostname or "", urlsplit(b).hostname or ""
    return ha == hb or ha.split(".")[-2:] == hb.split(".")[-2:]


def discover(
    raw: str,
    access: ServerAccess,
    profile: ProviderProfile | None = None,
    dns_discovery: bool = True,
) -> Discovery:
    """Resolve ``raw`` to a server and list its calendars.

    :raises CalendarURLError: when ``raw`` is not a usable address.
    :raises AuthenticationFailedError: when the server refuses the credentials.
    :raises CalDAVError: with the most telling failure when no candidate works.
    """
    normalised = normalise(raw, profile)
    profile = normalised.profile
    candidates = list(normalised.candidates)
    steps: list[str] = []
    if dns_discovery and "://" not in raw and "/" not in raw.strip():
        # RFC 6764: SRV/TXT records (then well-known) for a bare domain or e-mail.
        try:
            info = discover_caldav(raw.strip(), timeout=int(access.timeout))
        except Exception as exc:  # DNS or HTTP trouble: the other candidates remain
            steps.append(f"RFC 6764 discovery for {raw.strip()!r} failed: {type(exc).__name__}")
            info = None
        if info is not None:
            candidates.insert(
                0, Candidate(info.url, f"found by RFC 6764 discovery ({info.source})")
            )
    failures: list[CalDAVError] = []
    for candidate in candidates:
        try:
            return _try_candidate(candidate, access, profile, steps)
        except AuthenticationFailedError:
            raise
        except CalDAVError as exc:
            steps.append(f"{redact_url(candidate.url)}: {exc.message}")
            failures.append(exc)
    if not failures:
        raise NotCalDAVError("there was no address to try")
    # Prefer the most specific failure over "not found" on fallback addresses.
    ranked = sorted(failures, key=lambda e: isinstance(e, NotCalDAVError) or e.status == 404)
    best = ranked[0]
    raise type(best)(
        f"no calendar found at {redact_url(raw)}: " + "; ".join(steps),
        status=best.status,
    )


def _try_candidate(
    candidate: Candidate, access: ServerAccess, profile: ProviderProfile, steps: list[str]
) -> Discovery:
    client = open_client(access.at(candidate.url))
    (here,) = _propfind(client, candidate.url, 0, f"asking {redact_url(candidate.url)} what it is")[
        :1
    ]
    selected = _calendar_info(here) if here.has_type("c:calendar") else None
    principal = here.href_of("d:current-user-principal")
    home = here.href_of("c:calendar-home-set")
    if principal and not home:
        principal = urljoin(candidate.url, principal)
        found = _propfind(client, principal, 0, "reading the principal's calendar home")
        home = found[0].href_of("c:calendar-home-set") if found else None
    if home:
        home = urljoin(principal or candidate.url, home)
        if not _same_site(home, candidate.url) and not is_partition_host(
            profile, urlsplit(home).hostname or ""
        ):
            raise NotCalDAVError(
                f"the server put the calendar home on another site ({redact_url(home)}); "
                "link with that address directly if you trust it"
            )
    elif selected is not None:
        home = urljoin(candidate.url, "..")
    if selected is None and home is None:
        if here.has_type("d:collection") or here.props is not None:
            raise NotCalDAVError("it answers WebDAV but names no principal or calendar home")
        raise NotCalDAVError("it does not answer as a CalDAV server")
    calendars: list[CalendarInfo] = []
    if home:
        home_client = client if _same_site(home, candidate.url) else open_client(access.at(home))
        try:
            listing = _propfind(home_client, home, 1, "listing the calendars")
        except CalDAVError as exc:
            if selected is None:
                raise
            steps.append(f"could not list the other calendars: {exc.message}")
            listing = []
        calendars = [_calendar_info(r) for r in listing if r.has_type("c:calendar")]
    if selected is not None and all(c.url != selected.url for c in calendars):
        calendars.insert(0, selected)
    if not calendars:
        raise NotCalDAVError("it is a CalDAV server, but this account has no calendars there")
    return Discovery(
        used_url=candidate.url,
        reason=candidate.reason,
        principal_url=principal,
        home_url=home,
        calendars=tuple(calendars),
        selected=selected,
        steps=tuple(steps),
    )


PROBE_BODY = (
    "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//caljournal//probe//EN\r\n"
    "BEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20000101T000000Z\r\n"
    "DTSTART:20000101T000000Z\r\nDTEND:20000101T000100Z\r\n"
    "SUMMARY:caljournal connection test (safe to delete)\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
)


def probe_write(access: ServerAccess, calendar_url: str) -> str:
    """Prove we can write: create and delete a probe event; return what was done.

    :raises CalDAVError: naming the precise failure (password, read-only, no such
        calendar, TLS, not CalDAV, unreachable).
    """
    client = open_client(access.at(calendar_url))
    (here,) = _propfind(client, calendar_url, 0, "opening the calendar")[:1]
    if not here.has_type("c:calendar"):
        raise NotCalDAVError(f"{redact_url(calendar_url)} is not a calendar collection")
    uid = f"caljournal-probe-{uuid.uuid4()}"
    href = urljoin(calendar_url if calendar_url.endswith("/") else calendar_url + "/", f"{uid}.ics")
    response = request(
        client,
        href,
        "PUT",
        "writing a test event",
        body=PROBE_BODY.format(uid=uid),
        headers={"Content-Type": "text/calendar; charset=utf-8", "If-None-Match": "*"},
        ok=(200, 201, 204),
    )
    etag = (response.headers or {}).get("ETag")
    request(
        client,
        href,
        "DELETE",
        "deleting the test event",
        headers={"If-Match": etag} if etag and not etag.startswith("W/") else {},
        ok=(200, 204),
    )
    return f"created and deleted a test event in {redact_url(calendar_url)}"
