"""Read what changed in a remote calendar: sync tokens, ETag listings, batched loads.

The port the inbound poller talks to. The REPORT bodies (sync-collection,
calendar-multiget) ask only for ETags and calendar data (``adapters.multistatus``);
the requests go through the caldav client's guarded session
(``adapters.calendar_requests``) and their answers are read as a stream. This
module chooses the cheapest question for the server at hand and turns the
answers into plain href → ETag maps, with the objects' data where the server
sent it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from functools import partial
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from caldav.compatibility_hints import at_spelling_is_significant
from caldav.elements import dav
from lxml import etree

from caljournal.adapters.caldav_client import (
    CalDAVError,
    ResponseTooLargeError,
    ServerAccess,
    open_client,
)
from caljournal.adapters.calendar_requests import CTAG_BODY, NS, etag, propfind, read, report
from caljournal.adapters.hrefs import HrefJoiner
from caljournal.adapters.multistatus import (
    Answer,
    calendar_query_body,
    multiget_body,
    sync_collection_body,
)
from caljournal.adapters.retry import RetryPolicy
from caljournal.adapters.storage import (
    MULTIGET_MOST,
    Delta,
    FetchMode,
    Loaded,
    SyncTokenInvalid,
)
from caljournal.adapters.transport import DISCOVERY, LISTING, MULTIGET

T = TypeVar("T")

#: A full multiget answered within this many seconds doubles the next one (up to
#: MULTIGET_MOST): a server that costs much per request (about a second each, on
#: some) is asked fewer times; one slower than half the request deadline halves it.
MULTIGET_QUICK = 2.0
#: The share of the request deadline past which a multiget counts as slow.
MULTIGET_SLOW_SHARE = 0.5
# Truncated (507) sync answers followed before giving up on a server.
MAX_SYNC_ANSWERS = 1000


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
        mode: FetchMode | None = None,
    ) -> None:
        self.calendar_url = calendar_url if calendar_url.endswith("/") else calendar_url + "/"
        self.access = access.at(self.calendar_url)
        self.client = open_client(self.access)
        self.calendar = self.client.calendar(url=self.calendar_url)
        self._hrefs = HrefJoiner(self.calendar.url, self.calendar_url)
        self.full_timeout = full_timeout
        self.retry = retry or RetryPolicy(attempts=1)
        self._full_client: Any = None
        mode = mode or FetchMode()
        # Whether sync-collection may ask for calendar data (a refusal turns it off).
        self.inline_data = mode.inline_data
        # Objects per multiget, adapted to how the server answers (see ``_next_batch``);
        # never again as many as an answer that passed the size cap held.
        self.multiget_batch = mode.multiget_batch
        self._multiget_ceiling = MULTIGET_MOST + 1

    @property
    def fetch_mode(self) -> FetchMode:
        """Return how this reader asks for objects now (what it learned of the server)."""
        return FetchMode(self.inline_data, self.multiget_batch)

    def use_fetch_mode(self, mode: FetchMode) -> None:
        """Ask for objects as ``mode`` says (recorded by an earlier reader of this calendar)."""
        self.inline_data = mode.inline_data
        self.multiget_batch = mode.multiget_batch

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

        The REPORT asks for each changed object's calendar data as well (RFC
        6578 allows any property), so one request can answer a first sync
        entirely; a server that leaves the data out answers with ETags only, and
        the objects are loaded by multiget. A server that refuses the question,
        or whose answer would pass the listing cap, is asked for ETags only.

        :raises SyncTokenInvalidError: when the server refuses the token.
        """
        if self.inline_data:
            try:
                delta = self._sync(token, with_data=True)
                if token is None and len(delta.data) < len(delta.changed):
                    # The server leaves data out of sync answers (Xandikos): one
                    # calendar-query brings every object rather than many multigets.
                    delta = self._with_everything(delta)
                return delta
            except ResponseTooLargeError:
                pass  # too much at once: ETags now, the objects by multiget
            except CalDAVError as exc:
                if exc.status not in (400, 403, 415, 422, 501):
                    raise
                # Refused with data but not for the token: this server wants ETags only.
                self.inline_data = False
        return self._sync(token, with_data=False)

    def _with_everything(self, delta: Delta) -> Delta:
        """Return ``delta`` with the data of its objects from one calendar-query.

        Only objects whose ETag is the one the delta names are taken: anything
        changed since is loaded on its own (or reported by the next delta). A
        server that refuses the query, or whose answer passes the listing cap,
        leaves the delta as it was.
        """
        try:
            raw = self._call(
                partial(
                    self._report,
                    self._full(),
                    calendar_query_body(),
                    "1",
                    LISTING,
                    None,
                    "loading every object",
                )
            )
        except ResponseTooLargeError:
            return replace(delta, requests=delta.requests + 1)
        except CalDAVError as exc:
            if exc.status not in (400, 403, 415, 422, 501):
                raise
            return replace(delta, requests=delta.requests + 1)
        data = dict(delta.data)
        preserve = self._at_kept()
        for item in read(raw, "loading every object"):
            if isinstance(item, Answer) or item.data is None:
                continue
            href = self._hrefs.spelled(item.href, preserve)
            if href in delta.changed and item.etag == delta.changed[href]:
                data[href] = item.data
        return replace(delta, data=data, requests=delta.requests + 1)

    def _sync(self, token: str | None, with_data: bool) -> Delta:
        """Ask sync-collection from ``token``, following truncated answers (507)."""
        client = self._full() if token is None else self.client
        # A delta is small unless much changed: it gets the listing's cap, but
        # only a first (full) sync gets the listing's patient deadline.
        seconds = None if token is None else self.access.limits.request_seconds
        changed: dict[str, str | None] = {}
        data: dict[str, bytes] = {}
        deleted: set[str] = set()
        asked = token
        requests = 0
        # Each answer is capped on its own; a server that keeps truncating must
        # not make the whole sync unbounded: the data held and the number of
        # follow-up requests are capped too.
        cap = self.access.limits.max_bytes(LISTING)
        held = 0
        while True:
            if requests >= MAX_SYNC_ANSWERS:
                raise CalDAVError(
                    f"the server kept truncating its answer to what changed "
                    f"({MAX_SYNC_ANSWERS} answers)"
                )
            body = sync_collection_body(asked, with_data)
            raw = self._call(
                partial(
                    self._report, client, body, "1", LISTING, seconds, "asking what changed", asked
                )
            )
            requests += 1
            answer = Answer(members=[])
            preserve = self._at_kept()
            for item in read(raw, "asking what changed", urlsplit(self.calendar_url).path):
                if isinstance(item, Answer):
                    answer = item
                    continue
                href = self._hrefs.spelled(item.href, preserve)
                if href.rstrip("/") == self.calendar_url.rstrip("/") or href.endswith("/"):
                    continue
                if item.status == 404:
                    deleted.add(href)
                    changed.pop(href, None)
                    data.pop(href, None)
                    continue
                deleted.discard(href)
                changed[href] = item.etag
                if item.data is not None:
                    held += len(item.data)
                    if held > cap:
                        raise ResponseTooLargeError(
                            f"the server sent more than {cap // (1024 * 1024)} MiB of calendar "
                            "data for one sync"
                        )
                    data[href] = item.data
                else:
                    data.pop(href, None)
            if not answer.truncated or not answer.token or answer.token == asked:
                break
            asked = answer.token
        return Delta(
            changed=changed,
            deleted=frozenset(deleted),
            token=answer.token,
            complete=token is None,
            requests=requests,
            data=data,
        )

    def _report(
        self,
        client: Any,
        body: bytes,
        depth: str,
        kind: str,
        seconds: float | None,
        what: str,
        token: str | None = None,
    ) -> bytes:
        """Send one REPORT to the calendar (``calendar_requests.report``); return its body."""
        return report(
            client, self.calendar_url, body, depth, kind, seconds, what, token, self._call
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
        preserve = self._at_kept()
        for node in tree.findall("d:response", NS):
            href = self._hrefs.spelled(node.findtext("d:href", "", NS).strip(), preserve)
            if href.rstrip("/") == self.calendar_url.rstrip("/"):
                continue
            if node.find(".//d:resourcetype/d:collection", NS) is not None:
                continue
            found[href] = etag(node.findtext(".//d:getetag", None, NS))
        return Delta(changed=found, complete=True)

    def _at_kept(self) -> bool:
        """Return whether the server's profile says the two spellings of ``@`` are two resources."""
        return at_spelling_is_significant(getattr(self.client, "features", None))

    def state_tag(self) -> str | None:
        """Return the collection's CTag or sync-token property (None if it has neither)."""
        tree = self._propfind(
            self.client, DISCOVERY, "0", CTAG_BODY, "asking whether the calendar changed"
        )
        for path in (".//cs:getctag", ".//d:sync-token"):
            value = tree.findtext(path, None, NS)
            if value:
                return value.strip()
        return None

    def _propfind(self, client: Any, kind: str, depth: str, body: bytes, what: str) -> Any:
        """Send one PROPFIND to the calendar (retried as the policy says); return its XML tree."""
        return propfind(client, self.calendar_url, kind, depth, body, what, self._call)

    def load(self, hrefs: Iterable[str]) -> Loaded:
        """Load objects with calendar-multiget, in batches (never one GET each).

        The REPORT asks for ETags and calendar data only. Objects are keyed by
        the href asked for: a server may spell an href differently in its
        answer (``%40`` in a listing, ``@`` in a multiget).
        """
        pending = list(hrefs)
        loaded = Loaded()
        while pending:
            batch, pending = pending[: self.multiget_batch], pending[self.multiget_batch :]
            asked = {unquote(h): h for h in batch}
            body = multiget_body(urlsplit(h).path for h in batch)
            began = time.monotonic()
            try:
                raw = self._call(
                    partial(
                        self._report,
                        self.client,
                        body,
                        "1",
                        MULTIGET,
                        None,
                        "loading changed objects",
                    )
                )
            except ResponseTooLargeError:
                if len(batch) == 1:
                    raise
                # Large objects: ask for fewer at a time rather than read more.
                self._multiget_ceiling = len(batch)
                self.multiget_batch = len(batch) // 2
                pending[:0] = batch
                loaded.requests += 1
                continue
            loaded.requests += 1
            if len(batch) == self.multiget_batch:  # a short last batch says little
                self.multiget_batch = self._next_batch(time.monotonic() - began)
            for item in read(raw, "loading changed objects"):
                if isinstance(item, Answer) or item.data is None:
                    continue  # a 404 inside the multistatus: gone meanwhile
                absolute = self._hrefs.join(item.href)
                href = asked.get(unquote(absolute), absolute)
                loaded.objects[href] = (item.data, item.etag)
            loaded.missing.update(h for h in batch if h not in loaded.objects)
        return loaded

    def _next_batch(self, seconds: float) -> int:
        """Return the objects the next multiget asks for, after a full one took ``seconds``."""
        size = self.multiget_batch
        if seconds <= MULTIGET_QUICK:
            return max(min(size * 2, MULTIGET_MOST, self._multiget_ceiling - 1), 1)
        if seconds > self.access.timeout * MULTIGET_SLOW_SHARE:
            return max(size // 2, 1)
        return size

    def close(self) -> None:
        """Close the connections."""
        self.client.session.close()
        if self._full_client is not None:
            self._full_client.session.close()
