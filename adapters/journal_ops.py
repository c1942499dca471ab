"""Three ways of touching one aggregate in the journal, each written once.

``load_or_not_found``
    the aggregate, or the application's :class:`~caljournal.errors.NotFoundError`
    with a message naming what is missing (``find`` answers None instead);
``apply``
    load, run a command, save; when another writer recorded the next version
    first (optimistic concurrency: ``IntegrityError``), load the newer state and
    run the command again, a bounded number of times with jittered waits
    (tenacity), then raise :class:`~caljournal.errors.ConflictError`;
``state_as_of``
    the aggregate as it was at a moment, replayed from its events.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import CanMutateAggregate
from eventsourcing.persistence import IntegrityError
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from caljournal.adapters.journal import Journal
from caljournal.errors import ConflictError, NotFoundError

A = TypeVar("A")

ATTEMPTS = 30


def replay(aggregate: Any, events: Iterable[Any]) -> Any:
    """Apply stored events in order: the library's default projector, minus a check.

    The default also asserts every event against a runtime-checkable Protocol,
    which costs about 35 µs per load on Python 3.11, and every write through
    the API loads its appointment first.
    """
    for event in events:
        aggregate = event.mutate(aggregate)
    return aggregate


def _noun(kind: type) -> str:
    """Return how a message names an aggregate class ("calendar link" for CalendarLink)."""
    name = kind.__name__
    words = "".join(" " + c.lower() if c.isupper() else c for c in name).strip()
    return words or "aggregate"


def find(journal: Journal, aggregate_id: UUID, kind: type[A]) -> A | None:
    """Return the aggregate of class ``kind``, or None when the journal has none."""
    try:
        found = journal.repository.get(aggregate_id, projector_func=replay)
    except AggregateNotFoundError:
        return None
    return found if isinstance(found, kind) else None


def load_or_not_found(
    journal: Journal, aggregate_id: UUID, kind: type[A], message: str | None = None
) -> A:
    """Return the aggregate of class ``kind``.

    :raises NotFoundError: when the journal has none (``message``, or "no
        <kind> <id>").
    """
    found = find(journal, aggregate_id, kind)
    if found is None:
        raise NotFoundError(message or f"no {_noun(kind)} {aggregate_id}")
    return found


@dataclass(frozen=True)
class Applied(Generic[A]):
    """The outcome of :func:`apply`: the aggregate, its ``state()``, and whether it was saved."""

    aggregate: A
    state: dict[str, Any]
    saved: bool


def apply(
    journal: Journal,
    aggregate_id: UUID,
    command: Callable[[A], object],
    kind: type[A],
    *,
    load: Callable[[UUID], A] | None = None,
    attempts: int = ATTEMPTS,
    extra_rows: Callable[[], Iterable[Any]] | None = None,
) -> Applied[A]:
    """Load an aggregate, run ``command`` on it and save it, retrying on concurrency conflicts.

    ``command`` returning False means "nothing to record": nothing is saved.
    ``load`` replaces :func:`load_or_not_found` (e.g. to check the caller's
    scope). ``extra_rows`` gives query-table rows written in the same
    transaction (asked again on every attempt). Errors of the command or of
    ``load`` are not retried.

    :raises NotFoundError: when there is no such aggregate.
    :raises ConflictError: when other writers won every one of ``attempts`` tries.
    """
    get = load or (lambda aggregate_id: load_or_not_found(journal, aggregate_id, kind))

    def attempt() -> Applied[A]:
        aggregate = get(aggregate_id)
        if command(aggregate) is False:
            return Applied(aggregate, aggregate.state(), saved=False)  # type: ignore[attr-defined]
        state = aggregate.state()  # type: ignore[attr-defined]
        rows = list(extra_rows()) if extra_rows is not None else []
        journal.save(aggregate, states={aggregate_id: state}, extra_rows=rows)
        return Applied(aggregate, state, saved=True)

    retrying = Retrying(
        retry=retry_if_exception_type(IntegrityError),
        stop=stop_after_attempt(attempts),
        wait=wait_random_exponential(multiplier=0.002, max=0.1),
    )
    try:
        return retrying(attempt)
    except RetryError as exc:
        raise ConflictError(
            f"the {_noun(kind)} {aggregate_id} is changing too fast "
            f"({attempts} attempts lost to other writers); try again"
        ) from exc.last_attempt.exception()


def state_as_of(journal: Journal, aggregate_id: UUID, when: datetime | None) -> Any | None:
    """Return the aggregate as it was at ``when`` (now when None), or None if it did not exist."""
    aggregate: Any = None
    for event in journal.events.get(aggregate_id):
        if not isinstance(event, CanMutateAggregate):
            raise TypeError(f"{type(event).__name__} cannot rebuild an aggregate")
        if when is not None and event.timestamp > when:
            break
        aggregate = event.mutate(aggregate)
    return aggregate


def state_at_sequence(journal: Journal, aggregate_id: UUID, sequence: int) -> Any | None:
    """Return the aggregate's last state at appointment ``sequence`` (None if it never had it).

    An appointment's sequence counts the changes its calendar copy shows: the
    state at a sequence is what a push at that moment rendered.
    """
    found: Any = None
    aggregate: Any = None
    for event in journal.events.get(aggregate_id):
        if not isinstance(event, CanMutateAggregate):
            raise TypeError(f"{type(event).__name__} cannot rebuild an aggregate")
        aggregate = event.mutate(aggregate)
        current = getattr(aggregate, "sequence", None)
        if current == sequence:
            found = aggregate.state()
        elif current is not None and current > sequence:
            break
    return found


__all__ = [
    "Applied",
    "apply",
    "find",
    "load_or_not_found",
    "replay",
    "state_as_of",
    "state_at_sequence",
]
