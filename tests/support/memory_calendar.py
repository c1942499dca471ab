"""An in-memory stand-in for one CalDAV calendar: href → (bytes, ETag).

ETags come from one counter, so every write gives a new one. The conditional
writes behave like a CalDAV server's ``If-None-Match: *`` / ``If-Match``
requests: a failed precondition raises :class:`PreconditionFailed` and
changes nothing.

Every change is logged, so the calendar answers sync-collection deltas
(:meth:`MemoryCalendar.changes_since`). Like Xandikos, it can leave out of a
delta an object created and deleted after the token (``drops_short_lived``),
and :meth:`MemoryCalendar.lose_changes` makes it forget changes outright (a
server restored from a backup): then only a full listing shows them.
:class:`MemoryReader` is the ``CalendarReader`` port over it.
"""

from __future__ import annotations

from collections.abc import Iterable

from caljournal.adapters.calendar_reader import Delta, Loaded


class PreconditionFailed(Exception):
    """A conditional write found the object in another state (HTTP 412)."""


class MemoryCalendar:
    """The objects of one calendar collection, kept in a dict."""

    def __init__(self, drops_short_lived: bool = False) -> None:
        self.objects: dict[str, tuple[bytes, str]] = {}
        self._counter = 0
        self.drops_short_lived = drops_short_lived
        # (position, href, exists afterwards); a sync token is a position.
        self._log: list[tuple[int, str, bool]] = []
        self._lost_before = 0

    def _logged(self, href: str, exists: bool) -> None:
        self._counter += 1
        self._log.append((self._counter, href, exists))

    def _existed(self, href: str, position: int) -> bool:
        states = [exists for at, h, exists in self._log if h == href and at <= position]
        return bool(states and states[-1])

    def changes_since(self, token: str | None) -> tuple[dict[str, str], set[str], str, bool]:
        """Return (changed href → ETag, deleted hrefs, new token, complete) since ``token``.

        Without a token every object is listed (complete).
        """
        now = str(self._counter)
        if token is None:
            return self.listing(), set(), now, True
        since = int(token)
        touched = {h for at, h, _ in self._log if at > since and at > self._lost_before}
        changed = {h: self.objects[h][1] for h in touched if h in self.objects}
        deleted = {
            h
            for h in touched
            if h not in self.objects
            and not (self.drops_short_lived and not self._existed(h, since))
        }
        return changed, deleted, now, False

    def lose_changes(self) -> None:
        """Leave every change made so far out of later deltas (full listings still show it)."""
        self._lost_before = self._counter

    def _next_etag(self) -> str:
        self._counter += 1
        return f'"{self._counter}"'

    # -- what the sync code's reader and writer see -------------------------------

    def listing(self) -> dict[str, str]:
        """Return every object's href and ETag."""
        return {href: etag for href, (_, etag) in self.objects.items()}

    def fetch(self, href: str) -> tuple[bytes, str] | None:
        """Return an object's data and ETag, or None when there is none."""
        return self.objects.get(href)

    def create(self, href: str, data: bytes) -> str:
        """Store a new object (``If-None-Match: *``); return its ETag.

        :raises PreconditionFailed: when an object exists at ``href``.
        """
        if href in self.objects:
            raise PreconditionFailed(href)
        return self.put(href, data)

    def update(self, href: str, data: bytes, etag: str | None) -> str:
        """Replace an object, only if it still has ``etag`` (when given); return the new ETag.

        :raises PreconditionFailed: when the object changed or is gone.
        """
        if etag is not None:
            current = self.objects.get(href)
            if current is None or current[1] != etag:
                raise PreconditionFailed(href)
        return self.put(href, data)

    def delete(self, href: str, etag: str | None) -> None:
        """Delete an object, only if it still has ``etag`` (when given); gone is done.

        :raises PreconditionFailed: when the object changed (or is gone, with ``etag``).
        """
        current = self.objects.get(href)
        if etag is not None and (current is None or current[1] != etag):
            raise PreconditionFailed(href)
        if self.objects.pop(href, None) is not None:
            self._logged(href, False)

    # -- what another calendar client does ----------------------------------------

    def put(self, href: str, data: bytes) -> str:
        """Store ``data`` at ``href`` unconditionally; return the new ETag."""
        etag = self._next_etag()
        self.objects[href] = (data, etag)
        self._logged(href, True)
        return etag

    def remove(self, href: str) -> None:
        """Delete the object at ``href`` unconditionally."""
        del self.objects[href]
        self._logged(href, False)


class MemoryReader:
    """The calendar reader port over a :class:`MemoryCalendar`, counting requests."""

    def __init__(self, calendar: MemoryCalendar) -> None:
        self.calendar = calendar
        self.requests: list[str] = []

    def changes_since(self, token: str | None) -> Delta:
        """Return the calendar's delta since ``token`` (everything when None)."""
        self.requests.append("sync-collection")
        changed, deleted, new_token, complete = self.calendar.changes_since(token)
        return Delta(
            changed=dict(changed), deleted=frozenset(deleted), token=new_token, complete=complete
        )

    def listing(self) -> Delta:
        """Return every object's href and ETag."""
        self.requests.append("listing")
        return Delta(changed=dict(self.calendar.listing()), complete=True)

    def state_tag(self) -> str | None:
        """Return a CTag (the change counter)."""
        self.requests.append("ctag")
        return str(self.calendar._counter)

    def load(self, hrefs: Iterable[str]) -> Loaded:
        """Return the objects asked for (one request per 100, like a multiget)."""
        wanted = list(hrefs)
        loaded = Loaded(requests=(len(wanted) + 99) // 100)
        self.requests.extend(["multiget"] * loaded.requests)
        for href in wanted:
            found = self.calendar.fetch(href)
            if found is None:
                loaded.missing.add(href)
            else:
                loaded.objects[href] = found
        return loaded

    def close(self) -> None:
        """Nothing to close."""
