"""The lease keeper's wait: its period, or until another owner's lease expires."""

from __future__ import annotations

import pytest

from caljournal.adapters.syncstate import Lease
from caljournal.projections.worker import EXPIRY_MARGIN, keeper_wait

NOW = 1_000_000_000


def lease(account: str, owner: str, expires_in_s: float) -> Lease:
    return Lease(account, owner, NOW + int(expires_in_s * 1e6))


def test_without_other_owners_the_keeper_waits_its_period() -> None:
    assert keeper_wait([], "me", NOW, NOW, 2.0) == 2.0
    assert keeper_wait([lease("a", "me", 0.5)], "me", NOW, NOW, 2.0) == 2.0


def test_the_keeper_wakes_just_after_the_first_lease_of_another_owner_expires() -> None:
    leases = [lease("a", "dead", 1.5), lease("b", "dead", 0.7), lease("c", "me", 0.1)]

    assert keeper_wait(leases, "me", NOW, NOW, 2.0) == pytest.approx(0.7 + EXPIRY_MARGIN)


def test_leases_renewed_beyond_the_period_leave_the_period() -> None:
    leases = [lease("a", "alive", 9.5), lease("b", "alive", 8.0)]

    assert keeper_wait(leases, "me", NOW, NOW, 2.0) == 2.0


def test_a_lease_expired_already_is_not_waited_for() -> None:
    # The round that read it could take it, or was at its share: waking at once
    # again would only spin.
    leases = [lease("a", "dead", -3.0), lease("b", "dead", 1.0)]

    assert keeper_wait(leases, "me", NOW, NOW, 2.0) == pytest.approx(1.0 + EXPIRY_MARGIN)
    assert keeper_wait([lease("a", "dead", -3.0)], "me", NOW, NOW, 2.0) == 2.0


def test_a_lease_expiring_now_is_waited_for_only_the_margin() -> None:
    assert keeper_wait([lease("a", "dead", 0.0)], "me", NOW, NOW, 2.0) == pytest.approx(
        EXPIRY_MARGIN
    )


def test_a_lease_that_expired_during_the_round_is_taken_by_the_next_one_at_once() -> None:
    # The round judged at NOW, when the lease had 50 ms left; it ended 200 ms later.
    leases = [lease("a", "dead", 0.05), lease("b", "dead", 5.0)]
    ended = NOW + 200_000

    assert keeper_wait(leases, "me", NOW, ended, 2.0) == pytest.approx(EXPIRY_MARGIN)
