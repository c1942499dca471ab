"""Read what changed in a remote calendar: sync tokens, ETag listings, batched loads.

The port the inbound poller talks to. Everything goes through the caldav
library (sync-collection REPORT with 507 truncation handling, calendar-multiget,
PROPFIND); this module only chooses the cheapest question for the server at
hand and turns the library's answers into plain href → ETag maps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from functools import partial
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

from caldav.compatibility_hints import at_spelling_is_significant
from caldav.elements import dav
from caldav.lib import error as dav_error
from caldav.lib.url import URL, normalise_path
from lxml import etree

from caljournal.adapters.caldav_client import (
    NotCalDAVError,
    ResponseTooLargeError,
    ServerAccess,
    open_client,
    request,
    translate,
)
from caljournal.adapters.retry import RetryPolicy
from caljournal.adapters.storage import Delta, Loaded, SyncTokenInvalid
from caljournal.adapters.transport import DISCOVERY, LISTING, MULTIGET, GuardedSession

T = TypeVar("T")

VALID_SYNC_TOKEN = "{DAV:}valid-sync-token"
MULTIGET_BATCH = 100
NS = {"d": "DAV:", "cs": "http://calendarserver.org/ns/"}


# The port's records and errors (``adapters.storage``), under the names used here.
SyncTokenInvalidError = SyncTokenInvalid


class CalendarReader:
    """Ask one calendar collection what changed.

    Every request is retried as ``retry`` says (one attempt when None); a
    multiget batch is retried on its own, so a fault late in a large load
    repeats one batch, not the load.
    """

    def __init__(
        self,
        access: ServerAccess,
        calendar_url: str,
        full_timeout: float = 300.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.calendar_url = calendar_url if calendar_url.endswith("/") else calendar_url + "/"
        self.access = access.at(self.calendar_url)
        self.client = open_client(self.access)
        self.calendar = self.client.calendar(url=self.calendar_url)
        self.full_timeout = full_timeout
        self.retry = retry or RetryPolicy(attempts=1)
        self._full_client: Any = None

    def _call(self, fn: Callable[[], T]) -> T:
        return self.retry.call(fn)

    def _full(self) -> Any:
        # A first sync or a full listing of a large calendar can take a server
        # far longer than a delta; it gets its own, patient connection.
        if self._full_client is None:
            patient = replace(self.access, timeout=max(self.full_timeout, self.access.timeout))
            self._full_client = open_client(patient)
        return self._full_client

    def changes_since(self, token: str | None) -> Delta:
        """Return the changes since ``token`` (all objects when None) by sync-collection.

        :raises SyncTokenInvalidError: when the server refuses the token.
        """
        calendar = (
            self.calendar if token is not None else self._full().calendar(url=self.calendar_url)
        )
        # A delta is small unless much changed: it gets the listing's cap, but
        # only a first (full) sync gets the listing's patient deadline.
        seconds = None if token is None else self.access.limits.request_seconds

        def ask() -> Any:
            with (
                translate("asking the calendar what changed"),
                calendar.client.session.kind(LISTING, seconds),
            ):
                try:
                    return calendar.get_objects_by_sync_token(
                        sync_token=token, load_objects=False, disable_fallback=True
                    )
                except dav_error.DAVError as exc:
                    if VALID_SYNC_TOKEN in (getattr(exc, "preconditions", None) or []):
                        raise SyncTokenInvalidError(
                            "the server no longer knows the sync token", status=exc.status
                        ) from None
                    raise

        result = self._call(ask)
        changed = {
            self._spelled(str(obj.url)): _etag(obj.props.get(dav.GetEtag.tag))
            for obj in result.objects
        }
        deleted = frozenset(self._spelled(str(u)) for u in result.deleted_urls)
        return Delta(
            changed={h: e for h, e in changed.items() if h not in deleted},
            deleted=deleted,
            token=str(result.sync_token) if result.sync_token else None,
            complete=token is None,
        )

    def listing(self) -> Delta:
        """Return every object's href and ETag (one PROPFIND, no calendar data)."""
        body = etree.tostring(
            (dav.Propfind() + [dav.Prop() + [dav.GetEtag(), dav.ResourceType()]]).xmlelement(),
            xml_declaration=True,
            encoding="utf-8",
        )
        tree = self._propfind(self._full(), LISTING, "1", body, "listing the calendar's objects")
        found: dict[str, str | None] = {}
        for node in tree.findall("d:response", NS):
            href = self._spelled(node.findtext("d:href", "", NS).strip())
            if href.rstrip("/") == self.calendar_url.rstrip("/"):
                continue
            if node.find(".//d:resourcetype/d:collection", NS) is not None:
                continue
            found[href] = _etag(node.findtext(".//d:getetag", None, NS))
        return Delta(changed=found, complete=True)

    def _spelled(self, href: str) -> str:
        """Return the absolute URL of an href from the server, in one spelling.

        Servers and the library spell an href in more than one way: the
        library re-quotes the hrefs of a sync-collection answer (``@`` as
        ``%40``), Xandikos sends a literal ``@`` in a PROPFIND. Listings and
        deltas must name an object alike, or a known object would look
        deleted and a new one appear. A member of the calendar is spelled as
        the calendar's URL (as given, the prefix of every href this process
        writes) plus its re-quoted name; where the library's profile says the
        two spellings of ``@`` are two resources, the ``@`` is left as sent.
        """
        parts = urlsplit(str(self.calendar.url.join(href)))
        preserve = at_spelling_is_significant(getattr(self.client, "features", None))
        folder, _, name = parts.path.rpartition("/")
        if name and unquote(folder + "/") == unquote(urlsplit(self.calendar_url).path):
            return self.calendar_url + normalise_path(name, safe="", preserve_at=preserve)
        return urlunsplit(parts._replace(path=normalise_path(parts.path, preserve_at=preserve)))

    def state_tag(self) -> str | None:
        """Return the collection's CTag or sync-token property (None if it has neither)."""
        body = (
            b'<?xml version="1.0" encoding="utf-8"?><d:propfind xmlns:d="DAV:" '
            b'xmlns:cs="http://calendarserver.org/ns/"><d:prop><cs:getctag/><d:sync-token/>'
            b"</d:prop></d:propfind>"
        )
        tree = self._propfind(
            self.client, DISCOVERY, "0", body, "asking whether the calendar changed"
        )
        for path in (".//cs:getctag", ".//d:sync-token"):
            value = tree.findtext(path, None, NS)
            if value:
                return value.strip()
        return None

    def _propfind(self, client: Any, kind: str, depth: str, body: bytes, what: str) -> Any:
        """Send one PROPFIND to the calendar (retried as the policy says); return its XML tree."""

        def ask() -> Any:
            with client.session.kind(kind):
                return request(
                    client,
                    self.calendar_url,
                    "PROPFIND",
                    what,
                    body=body,
                    headers={"Depth": depth, "Content-Type": "application/xml; charset=utf-8"},
                    ok=(207,),
                )

        return _xml(self._call(ask).raw, what)

    def load(self, hrefs: Iterable[str]) -> Loaded:
        """Load objects with calendar-multiget, in batches (never one GET each).

        Objects are keyed by the href asked for: a server may spell an href
        differently in its answer (``%40`` in a listing, ``@`` in a multiget).
        """
        wanted = list(hrefs)
        loaded = Loaded()
        batches = [wanted[i : i + MULTIGET_BATCH] for i in range(0, len(wanted), MULTIGET_BATCH)]
        while batches:
            batch = batches.pop(0)
            asked = {unquote(h): h for h in batch}
            try:
                objects = self._call(partial(self._multiget, batch))
            except ResponseTooLargeError:
                if len(batch) == 1:
                    raise
                # Large objects: ask for fewer at a time rather than read more.
                half = len(batch) // 2
                batches[:0] = [batch[:half], batch[half:]]
                loaded.requests += 1
                continue
            loaded.requests += 1
            for obj in objects:
                # The bytes the server sent, not ``data``: caldav's vcal.fix()
                # strips trailing blanks and backslashes before quotes, which
                # would read as changes of the appointment's text.
                raw = obj.raw_data if obj.raw_data is not None else obj.data
                if raw is None:  # a 404 inside the multistatus: gone meanwhile
                    continue
                href = asked.get(unquote(str(obj.url)), str(obj.url))
                loaded.objects[href] = (
                    _bytes(raw),
                    _etag((obj.props or {}).get(dav.GetEtag.tag)),
                )
            loaded.missing.update(h for h in batch if h not in loaded.objects)
        return loaded

    def _multiget(self, batch: list[str]) -> list[Any]:
        session = self.client.session
        assert isinstance(session, GuardedSession)  # open_client installs it
        with translate("loading changed objects"), session.kind(MULTIGET):
            return list(
                self.calendar.multiget([URL.objectify(h) for h in batch], raise_notfound=False)
            )

    def close(self) -> None:
        """Close the connections."""
        self.client.session.close()
        if self._full_client is not None:
            self._full_client.session.close()


def _etag(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _bytes(raw: Any) -> bytes:
    return raw.encode() if isinstance(raw, str) else bytes(raw)


def _xml(raw: Any, what: str) -> Any:
    """Parse a multistatus answer.

    :raises NotCalDAVError: when it is not XML.
    """
    try:
        return etree.fromstring(_bytes(raw))
    except (etree.XMLSyntaxError, ValueError):
        raise NotCalDAVError(f"the server's answer was not CalDAV XML while {what}") from None
