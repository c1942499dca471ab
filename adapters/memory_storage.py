"""The calendar storage port in memory: href → (bytes, ETag), with a change log.

The twin of ``adapters.caldav_storage.CalDAVStorage`` for unit and property
tests, held to the same contract suite (``tests/contract``). Like vdirsyncer's
``storage/memory.py``, it is a dict; ETags and sync tokens come from one change
counter, so every write gives a new ETag and every token names a point in the
change log.

Besides the port it does what another client of the same calendar does
(:meth:`MemoryStorage.put`, :meth:`MemoryStorage.remove`) and what servers do
to a sync engine: like Xandikos it can leave out of a delta an object created
and deleted after the token (``drops_short_lived``); :meth:`lose_changes`
forgets changes outright (a server restored from a backup: only a full listing
shows them); :meth:`expire_tokens` makes every token issued so far unknown
(Radicale forgets tokens after 30 days). Like a server that answers a
sync-collection REPORT with calendar data, its deltas carry the changed
objects' data, unless ``inline_data`` is False (a server that sends ETags
only) or the storage's fetch mode says not to ask for it. ``requests`` names
every request the sync code made, by kind.
"""

from __future__ import annotations

from collections.abc import Iterable

from caljournal.adapters.storage import (
    Delta,
    FetchMode,
    Loaded,
    PreconditionFailed,
    SyncTokenInvalid,
    Written,
)


class MemoryStorage:
    """One calendar collection kept in a dict (see the module's docstring)."""

    def __init__(
        self, calendar_url: str, drops_short_lived: bool = False, inline_data: bool = True
    ) -> None:
        self.calendar_url = calendar_url
        self.drops_short_lived = drops_short_lived
        self.inline_data = inline_data
        self.objects: dict[str, tuple[bytes, str]] = {}
        self.requests: list[str] = []
        self._counter = 0
        # (position, href, exists afterwards); a sync token is a position.
        self._log: list[tuple[int, str, bool]] = []
        self._lost_before = 0
        self._oldest_token = 0
        self._mode = FetchMode()

    @property
    def fetch_mode(self) -> FetchMode:
        """Return how objects are asked for: with the data in deltas or not, how many per load."""
        return self._mode

    def use_fetch_mode(self, mode: FetchMode) -> None:
        """Ask for objects as ``mode`` says."""
        self._mode = mode

    # -- reading ------------------------------------------------------------------

    def listing(self) -> Delta:
        """Return every object's href and ETag (complete)."""
        self.requests.append("listing")
        return Delta(changed=self._etags(), complete=True)

    def changes_since(self, token: str | None) -> Delta:
        """Return what changed since ``token`` (everything, complete, when None).

        :raises SyncTokenInvalid: when ``token`` is not one this calendar issued,
            or was issued before :meth:`expire_tokens`.
        """
        self.requests.append("sync-collection")
        now = str(self._counter)
        if token is None:
            return Delta(changed=self._etags(), token=now, complete=True, data=self._data())
        since = self._position(token)
        touched = {h for at, h, _ in self._log if at > since and at > self._lost_before}
        changed: dict[str, str | None] = {
            h: self.objects[h][1] for h in touched if h in self.objects
        }
        deleted = frozenset(
            h
            for h in touched
            if h not in self.objects
            and not (self.drops_short_lived and not self._existed(h, since))
        )
        data = {h: self.objects[h][0] for h in changed} if self._sends_data() else {}
        return Delta(changed=changed, deleted=deleted, token=now, data=data)

    def state_tag(self) -> str | None:
        """Return the change counter (a CTag)."""
        self.requests.append("ctag")
        return str(self._counter)

    def load(self, hrefs: Iterable[str]) -> Loaded:
        """Return the objects asked for, one request per multiget batch of the fetch mode."""
        wanted = list(hrefs)
        loaded = Loaded(requests=-(-len(wanted) // self._mode.multiget_batch))
        self.requests.extend(["multiget"] * loaded.requests)
        for href in wanted:
            found = self.objects.get(href)
            if found is None:
                loaded.missing.add(href)
            else:
                loaded.objects[href] = found
        return loaded

    def fetch(self, href: str) -> tuple[bytes, str | None] | None:
        """Return an object's data and ETag, or None when there is none."""
        self.requests.append("get")
        return self.objects.get(href)

    # -- conditional writes -------------------------------------------------------

    def create(self, href: str, data: bytes) -> Written:
        """Store a new object (``If-None-Match: *``).

        :raises PreconditionFailed: when an object exists at ``href``.
        """
        self.requests.append("create")
        if href in self.objects:
            raise PreconditionFailed(
                "an object already exists there while creating the calendar object", status=412
            )
        return Written(self._store(href, data))

    def update(self, href: str, data: bytes, etag: str | None) -> Written:
        """Replace an object, only if it still has ``etag`` (when given).

        :raises PreconditionFailed: when the object changed or is gone.
        """
        self.requests.append("update")
        if etag is not None:
            self._check(href, etag, "updating the calendar object")
        return Written(self._store(href, data))

    def delete(self, href: str, etag: str | None) -> None:
        """Delete an object, only if it still has ``etag`` (when given); gone is done.

        :raises PreconditionFailed: when the object changed.
        """
        self.requests.append("delete")
        if href not in self.objects:
            return
        if etag is not None:
            self._check(href, etag, "deleting the calendar object")
        del self.objects[href]
        self._logged(href, exists=False)

    def close(self) -> None:
        """Nothing to close."""

    # -- what another calendar client, or the server, does -------------------------

    def put(self, href: str, data: bytes) -> str:
        """Store ``data`` at ``href`` unconditionally; return the new ETag."""
        return self._store(href, data)

    def remove(self, href: str) -> None:
        """Delete the object at ``href`` unconditionally.

        :raises KeyError: when there is none.
        """
        del self.objects[href]
        self._logged(href, exists=False)

    def lose_changes(self) -> None:
        """Leave every change made so far out of later deltas (full listings still show it)."""
        self._lost_before = self._counter

    def expire_tokens(self) -> None:
        """Forget every sync token issued so far (asking with one raises SyncTokenInvalid)."""
        # Move the counter on, so tokens issued from now on differ from the forgotten ones.
        self._counter += 1
        self._oldest_token = self._counter

    # -- inside -------------------------------------------------------------------

    def _sends_data(self) -> bool:
        """Tell whether a delta carries the data: the server sends it and the mode asks for it."""
        return self.inline_data and self._mode.inline_data

    def _data(self) -> dict[str, bytes]:
        if not self._sends_data():
            return {}
        return {href: data for href, (data, _) in self.objects.items()}

    def _etags(self) -> dict[str, str | None]:
        return {href: etag for href, (_, etag) in self.objects.items()}

    def _position(self, token: str) -> int:
        position = int(token) if token.isdecimal() else -1
        if not self._oldest_token <= position <= self._counter:
            raise SyncTokenInvalid("the server no longer knows the sync token", status=403)
        return position

    def _check(self, href: str, etag: str, what: str) -> None:
        current = self.objects.get(href)
        if current is None or current[1] != etag:
            raise PreconditionFailed(f"the object changed on the server while {what}", status=412)

    def _store(self, href: str, data: bytes) -> str:
        if not isinstance(data, bytes):
            raise TypeError(f"calendar data must be bytes, not {type(data).__name__}")
        self._counter += 1
        etag = f'"{self._counter}"'
        self.objects[href] = (data, etag)
        self._log.append((self._counter, href, True))
        return etag

    def _logged(self, href: str, *, exists: bool) -> None:
        self._counter += 1
        self._log.append((self._counter, href, exists))

    def _existed(self, href: str, position: int) -> bool:
        states = [exists for at, h, exists in self._log if h == href and at <= position]
        return bool(states and states[-1])
