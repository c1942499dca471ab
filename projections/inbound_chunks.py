"""A poll's objects a chunk at a time, each chunk loaded and parsed while the one before is used.

While the poll decides and records one chunk, the next chunk is made ready: its
multiget is on its way, on one helper thread (which waits on the network, not on
the GIL), and its objects are parsed by the CPU pool (in a helper process when
the poll holds more than one chunk; :mod:`caljournal.adapters.cpu_pool`). Only one
chunk is ever ahead, so memory holds at most two; a load's failure is raised
where its chunk is taken, and a poll that stops early waits for the load in
flight (bounded by the request deadline).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from caljournal.adapters.cpu_pool import INLINE, CpuPool, Job
from caljournal.adapters.storage import CalendarStorage
from caljournal.projections.inbound_parse import Parsed, parse_object

BATCH = 500


@dataclass(frozen=True)
class Chunk:
    """Up to BATCH objects by href (data, ETag), their parse under way, and what loading found."""

    objects: dict[str, tuple[bytes, str | None]]
    parse: Job[Parsed]
    requests: int = 0
    missing: set[str] = field(default_factory=set)

    def parsed(self) -> dict[str, Parsed]:
        """Return :func:`parse_object` of each object by href (waiting for the parse)."""
        return dict(zip(self.objects, self.parse.result(), strict=True))


def fetch_chunks(
    storage: CalendarStorage,
    pool: CpuPool,
    wanted: list[str],
    inline: dict[str, bytes],
    etags: dict[str, str | None],
) -> Iterator[Chunk]:
    """Yield the objects ``wanted``, BATCH at a time; ``inline`` came with the delta."""
    parts = [wanted[i : i + BATCH] for i in range(0, len(wanted), BATCH)]
    rests = [[h for h in part if h not in inline] for part in parts]
    # A single chunk has nothing to be parsed ahead of: a helper would only add the trip.
    parser = pool if len(parts) > 1 else INLINE

    def ready(index: int) -> Chunk:
        objects = {h: (inline[h], etags.get(h)) for h in parts[index] if h in inline}
        requests, missing = 0, set()
        if rests[index]:
            loaded = storage.load(rests[index])
            objects.update(loaded.objects)
            requests, missing = loaded.requests, loaded.missing
        parse = parser.submit(parse_object, [data for data, _ in objects.values()])
        return Chunk(objects, parse, requests, missing)

    if sum(1 for rest in rests if rest) < 2:  # no load to overlap: no thread
        yield from _one_ahead(len(parts), lambda index: _now(ready, index))
        return
    with ThreadPoolExecutor(1, thread_name_prefix="caljournal-load") as ahead:
        context = contextvars.copy_context()  # the poll's log context
        yield from _one_ahead(
            len(parts), lambda index: ahead.submit(context.copy().run, ready, index)
        )


def _one_ahead(count: int, start: Callable[[int], Future[Chunk]]) -> Iterator[Chunk]:
    """Yield chunks 0 … count-1, starting each one's preparation before the one before is used."""
    pending = start(0) if count else None
    for index in range(count):
        assert pending is not None
        current = pending
        pending = start(index + 1) if index + 1 < count else None
        yield current.result()


def _now(ready: Callable[[int], Chunk], index: int) -> Future[Chunk]:
    """Prepare a chunk in this thread; a failure is kept for where the chunk is taken."""
    future: Future[Chunk] = Future()
    try:
        future.set_result(ready(index))
    except Exception as exc:  # noqa: BLE001 - re-raised by result(), where the chunk is taken
        future.set_exception(exc)
    return future
