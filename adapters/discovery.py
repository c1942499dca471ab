"""Find the calendars behind whatever URL, domain or e-mail address a user typed.

The user's input is normalised into candidate URLs (``adapters.calendar_url``);
each is asked over WebDAV what it is: a calendar, a calendar home, a principal,
or just a server that knows the current user's principal. The answer lists the
calendars found and says, in sentences, which URL was used and why.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit

import dns.exception
import dns.resolver
from caldav.elements import cdav, dav, ical
from lxml import etree

from caljournal.adapters.caldav_client import (
    AddressRefusedError,
    AuthenticationFailedError,
    CalDAVError,
    NotCalDAVError,
    ObjectNotFoundError,
    PreconditionFailedError,
    ServerAccess,
    TimedOutError,
    UnreachableError,
    open_client,
    request,
)
from caljournal.adapters.calendar_url import Candidate, normalise, redact_url, same_site
from caljournal.adapters.netguard import ForbiddenAddressError, HostLookupError, check_host
from caljournal.adapters.providers import ProviderProfile, is_partition_host
from caljournal.adapters.retry import RetryPolicy

T = TypeVar("T")

#: Discovery and the connection test ride out transient faults (429/503 with
#: Retry-After, 5xx, resets) like the worker; more attempts than a single
#: push, because one link makes a handful of requests that must all succeed.
DISCOVERY_RETRY = RetryPolicy(attempts=8, initial=0.2, maximum=2.0)


def _worth_retrying(exc: BaseException) -> bool:
    # A timeout already cost a whole timeout: retrying it would keep a user
    # waiting minutes for a server that does not answer.
    return isinstance(exc, CalDAVError) and exc.transient and not isinstance(exc, TimedOutError)


def _retry(call: Callable[[], T], policy: RetryPolicy) -> T:
    return policy.call(call, retry_on=_worth_retrying)


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
    base: str  # the URL that answered: hrefs in ``props`` are relative to it

    def has_type(self, tag: str) -> bool:
        return self.props is not None and self.props.find(f"d:resourcetype/{tag}", NS) is not None

    def text(self, path: str) -> str | None:
        if self.props is None:
            return None
        node = self.props.find(path, NS)
        return node.text.strip() if node is not None and node.text else None

    def href_of(self, path: str) -> str | None:
        """Return the absolute URL of an href property (servers send path-only ones)."""
        href = self.text(f"{path}/d:href")
        return urljoin(self.base, href) if href else None


def _props_for(access: ServerAccess) -> list[Any]:
    # Without a login there is no current user: Radicale answers a question
    # for its principal with 401, which would read as a wrong password.
    if access.auth == "none":
        return [p for p in _PROPS if not isinstance(p, dav.CurrentUserPrincipal)]
    return _PROPS


def _propfind(
    client: Any,
    url: str,
    depth: int,
    what: str,
    retry: RetryPolicy = DISCOVERY_RETRY,
    props: list[Any] = _PROPS,
) -> list[_Resource]:
    body = (dav.Propfind() + [dav.Prop() + list(props)]).xmlelement()
    response = _retry(
        lambda: request(
            client,
            url,
            "PROPFIND",
            what,
            body=etree.tostring(body, xml_declaration=True, encoding="utf-8"),
            headers={"Depth": str(depth), "Content-Type": "application/xml; charset=utf-8"},
            ok=(207,),
        ),
        retry,
    )
    # Path-only hrefs (DAViCal) are resolved against the URL that was asked,
    # also after a followed redirect: behind a reverse proxy that is the
    # address that works from here, whatever port the backend let slip.
    base = url
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
        found = None
        for propstat in node.findall("d:propstat", NS):
            status = propstat.findtext("d:status", default="", namespaces=NS)
            if " 200 " in status + " ":
                found = propstat.find("d:prop", NS)
        resources.append(_Resource(urljoin(base, href), found, base))
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


def discover(
    raw: str,
    access: ServerAccess,
    profile: ProviderProfile | None = None,
    dns_discovery: bool = True,
    retry: RetryPolicy = DISCOVERY_RETRY,
) -> Discovery:
    """Resolve ``raw`` to a server and list its calendars.

    Every host is checked against the address guard before anything connects
    to it: the typed host, SRV targets, and a calendar home on another host.

    :raises CalendarURLError: when ``raw`` is not a usable address.
    :raises AddressRefusedError: when the typed host is not a public address.
    :raises AuthenticationFailedError: when the server refuses the credentials.
    :raises CalDAVError: with the most telling failure when no candidate works.
    """
    normalised = normalise(raw, profile)
    profile = normalised.profile
    candidates = list(normalised.candidates)
    steps: list[str] = []
    bare = "://" not in raw and "/" not in raw.strip()
    resolving = []
    for candidate in candidates:
        if _check_address(candidate.url, access, unresolvable_ok=bare):
            resolving.append(candidate)
        else:
            steps.append(f"{redact_url(candidate.url)}: the host name does not resolve")
    candidates = resolving
    if dns_discovery and bare:
        domain = raw.strip().rsplit("@", 1)[-1]
        candidates[:0] = _rfc6764_candidates(domain, access, steps)
    failures: list[CalDAVError] = []
    unreachable: set[tuple[str, str]] = set()
    for candidate in candidates:
        origin = urlsplit(candidate.url)[:2]
        if origin in unreachable:
            continue
        try:
            return _try_candidate(candidate, access, profile, steps, retry)
        except AuthenticationFailedError:
            raise
        except CalDAVError as exc:
            steps.append(f"{redact_url(candidate.url)}: {exc.message}")
            failures.append(exc)
            if isinstance(exc, UnreachableError | TimedOutError):
                unreachable.add(origin)  # retried already; its other paths would be too
    if not failures:
        raise NotCalDAVError(
            f"no calendar found at {redact_url(raw)}: " + "; ".join(steps)
            if steps
            else "there was no address to try"
        )
    # Prefer the most specific failure over "not found" on fallback addresses.
    ranked = sorted(failures, key=lambda e: isinstance(e, NotCalDAVError) or e.status == 404)
    best = ranked[0]
    raise type(best)(
        f"no calendar found at {redact_url(raw)}: " + "; ".join(steps),
        status=best.status,
    )


def _check_address(url: str, access: ServerAccess, unresolvable_ok: bool = False) -> bool:
    """Refuse ``url`` before anything connects when its host is not allowed.

    Refusing up front (rather than on connect) also keeps response times from
    telling which local ports are open. Return False when the host name does
    not resolve and ``unresolvable_ok`` (a bare domain may exist only as SRV
    records), True when it may be connected to.

    :raises AddressRefusedError: when the host is not a public address.
    :raises UnreachableError: when the host name does not resolve.
    """
    parts = urlsplit(url)
    try:
        check_host(parts.hostname or "", access.allow_private, parts.port)
    except ForbiddenAddressError as exc:
        raise AddressRefusedError(str(exc)) from None
    except HostLookupError:
        if unresolvable_ok:
            return False
        raise UnreachableError(f"the host name {parts.hostname!r} does not resolve") from None
    return True


def _rfc6764_candidates(domain: str, access: ServerAccess, steps: list[str]) -> list[Candidate]:
    """Return the candidates the domain's SRV/TXT records name (RFC 6764), checked.

    A target that is not a public address is left out with a step saying so;
    nothing connects to it. The ``.well-known`` candidates come from
    :func:`normalise` and are guarded like any other request.
    """
    found: list[Candidate] = []
    for service, scheme in (("_caldavs", "https"), ("_caldav", "http")):
        name = f"{service}._tcp.{domain}"
        try:
            answers = sorted(
                _resolve(name, "SRV", access.timeout), key=lambda r: (r.priority, -r.weight)
            )
        except dns.exception.DNSException:
            continue
        path = _txt_path(name, access.timeout) or "/.well-known/caldav"
        for record in answers:
            target = str(record.target).rstrip(".")
            if not target:  # "." means: no such service here (RFC 2782)
                continue
            url = f"{scheme}://{_bracket(target)}:{int(record.port)}{path}"
            try:
                _check_address(url, access)
            except CalDAVError as exc:
                steps.append(f"the {service} SRV record's target was skipped: {exc.message}")
                continue
            reason = f"found by RFC 6764 discovery (the {service} SRV record of {domain})"
            found.append(Candidate(url, reason, insecure=scheme == "http"))
    return found


def _resolve(name: str, kind: str, timeout: float) -> Any:
    return dns.resolver.resolve(name, kind, lifetime=timeout)


def _txt_path(name: str, timeout: float) -> str | None:
    try:
        answers = _resolve(name, "TXT", timeout)
    except dns.exception.DNSException:
        return None
    for record in answers:
        text = b"".join(record.strings).decode("utf-8", "replace")
        for pair in text.split():
            key, _, value = pair.partition("=")
            if key.lower() == "path" and value.startswith("/"):
                return value
    return None


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _try_candidate(
    candidate: Candidate,
    access: ServerAccess,
    profile: ProviderProfile,
    steps: list[str],
    retry: RetryPolicy = DISCOVERY_RETRY,
) -> Discovery:
    client = open_client(access.at(candidate.url))
    what = f"asking {redact_url(candidate.url)} what it is"
    props = _props_for(access)
    (here,) = _propfind(client, candidate.url, 0, what, retry, props)[:1]
    selected = _calendar_info(here) if here.has_type("c:calendar") else None
    principal = here.href_of("d:current-user-principal")
    home = here.href_of("c:calendar-home-set")
    if principal and not home:
        what = "reading the principal's calendar home"
        found = _propfind(client, principal, 0, what, retry, props)
        home = found[0].href_of("c:calendar-home-set") if found else None
    if home:
        if not same_site(home, here.base) and not is_partition_host(
            profile, urlsplit(home).hostname or ""
        ):
            raise NotCalDAVError(
                f"the server put the calendar home on another site ({redact_url(home)}); "
                "link with that address directly if you trust it"
            )
    elif selected is not None:
        home = urljoin(here.href, "..")
    if selected is None and home is None:
        if here.has_type("d:collection") or here.props is not None:
            raise NotCalDAVError("it answers WebDAV but names no principal or calendar home")
        raise NotCalDAVError("it does not answer as a CalDAV server")
    calendars: list[CalendarInfo] = []
    if home:
        try:
            if urlsplit(home)[:2] != urlsplit(here.base)[:2]:
                _check_address(home, access)
                home_client = open_client(access.at(home))
            else:
                home_client = client
            listing = _propfind(home_client, home, 1, "listing the calendars", retry, props)
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


def probe_write(
    access: ServerAccess, calendar_url: str, retry: RetryPolicy = DISCOVERY_RETRY
) -> str:
    """Prove we can write: create and delete a probe event; return what was done.

    Transient faults are retried; a create whose answer was lost shows up as
    "exists" (412) on the retry, which with a fresh UID can only be ours.

    :raises CalDAVError: naming the precise failure (password, read-only, no such
        calendar, TLS, not CalDAV, unreachable).
    """
    client = open_client(access.at(calendar_url))
    what = "opening the calendar"
    (here,) = _propfind(client, calendar_url, 0, what, retry, _props_for(access))[:1]
    if not here.has_type("c:calendar"):
        raise NotCalDAVError(f"{redact_url(calendar_url)} is not a calendar collection")
    uid = f"caljournal-probe-{uuid.uuid4()}"
    href = urljoin(calendar_url if calendar_url.endswith("/") else calendar_url + "/", f"{uid}.ics")
    attempts = 0

    def create() -> str | None:
        nonlocal attempts
        attempts += 1
        try:
            response = request(
                client,
                href,
                "PUT",
                "writing a test event",
                body=PROBE_BODY.format(uid=uid),
                headers={"Content-Type": "text/calendar; charset=utf-8", "If-None-Match": "*"},
                ok=(200, 201, 204),
            )
        except PreconditionFailedError:
            if attempts == 1:
                raise
            return None  # an earlier attempt created it; its answer was lost
        return (response.headers or {}).get("ETag")

    etag = _retry(create, retry)

    def delete() -> None:
        try:
            request(
                client,
                href,
                "DELETE",
                "deleting the test event",
                headers={"If-Match": etag} if etag and not etag.startswith("W/") else {},
                ok=(200, 204),
            )
        except ObjectNotFoundError:
            return  # an earlier attempt deleted it; its answer was lost

    _retry(delete, retry)
    return f"created and deleted a test event in {redact_url(calendar_url)}"
