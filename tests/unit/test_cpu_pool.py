"""The CPU pool: work runs where the port says, and a lost helper costs time, never results."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from caljournal.adapters import cpu_pool
from caljournal.adapters.cpu_pool import (
    INLINE,
    HelperLost,
    InlinePool,
    ProcessPool,
    default_processes,
)
from caljournal.bootstrap import bootstrap
from caljournal.projections.inbound_chunks import parse_object as chunk_parse
from caljournal.settings import load_settings
from tests.support.cpu_work import pid_after, pid_of
from tests.support.patience import MIN_WAIT

ROOT = Path(__file__).resolve().parents[2]


def wait_until(condition: Callable[[], bool], timeout: float = MIN_WAIT) -> None:
    """Wait for ``condition`` to hold, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {condition}")
        time.sleep(0.05)


def alive(pid: int) -> bool:
    """Return whether process ``pid`` runs (a zombie does not count)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def parent_of(pid: int) -> int:
    """Return the parent process id of ``pid``."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


@pytest.fixture
def pool() -> Iterator[ProcessPool]:
    started = ProcessPool(1)
    yield started
    started.close()


def test_the_inline_pool_runs_the_function_once_where_the_result_is_asked() -> None:
    calls: list[str] = []

    def name_of(item: int) -> str:
        calls.append(threading.current_thread().name)
        return f"{item}:{threading.current_thread().name}"

    job = INLINE.submit(name_of, [1, 2])
    assert calls == []  # nothing ran at submit
    answers: list[list[str]] = []
    asker = threading.Thread(target=lambda: answers.append(job.result()), name="asker")
    asker.start()
    asker.join()

    assert answers == [["1:asker", "2:asker"]]
    assert job.result() == answers[0] and len(calls) == 2


def test_jobs_run_in_the_asking_thread_until_a_helper_is_ready(pool: ProcessPool) -> None:
    assert pool.pids() == []  # nothing started before the first job

    first = pool.submit(pid_of, [1, 2])

    assert first.result() == [os.getpid()] * 2
    wait_until(lambda: len(pool.pids()) == 1)  # started meanwhile
    assert pool.submit(pid_of, [3]).result() == pool.pids()


def test_a_process_pool_runs_the_function_in_its_helper(pool: ProcessPool) -> None:
    pool.warm(pid_of, MIN_WAIT)

    ran_in = pool.submit(pid_of, [1, 2, 3]).result()

    assert len(set(ran_in)) == 1
    assert ran_in[0] != os.getpid() and pool.pids() == [ran_in[0]]


def test_a_job_still_queued_behind_others_runs_in_the_asking_thread(pool: ProcessPool) -> None:
    pool.warm(pid_of, MIN_WAIT)
    (helper,) = pool.pids()
    busy = pool.submit(pid_after, [1.0])

    queued = pool.submit(pid_of, [0])

    assert queued.result() == [os.getpid()]  # taken back, not waited for
    assert busy.result() == [helper]


def helper_events(event: str) -> float:
    """Return the count of ``event`` in the helpers' metric."""
    return REGISTRY.get_sample_value("caljournal_cpu_helpers_total", {"event": event}) or 0.0


def test_a_killed_helper_costs_time_not_results(pool: ProcessPool) -> None:
    pool.warm(pid_of, MIN_WAIT)
    (killed,) = pool.pids()
    lost, started = helper_events("lost"), helper_events("started")

    os.kill(killed, signal.SIGKILL)
    job = pool.submit(pid_of, [0])
    wait_until(lambda: helper_events("lost") == lost + 1)  # the helper took it, and died

    assert job.result() == [os.getpid()]  # ran here instead
    assert pool.submit(pid_of, [0]).result() == [os.getpid()]  # until a new helper is up
    pool.warm(pid_of, MIN_WAIT)
    (again,) = pool.submit(pid_of, [0]).result()
    assert again not in (killed, os.getpid()) and pool.pids() == [again]
    assert (helper_events("lost"), helper_events("started")) == (lost + 1, started + 1)


def test_a_helper_that_cannot_start_leaves_the_work_here_for_a_while(
    pool: ProcessPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    starts: list[list[str]] = []

    def cannot_start(command: list[str], **_: object) -> subprocess.Popen[bytes]:
        starts.append(command)
        raise FileNotFoundError(command[0])

    monkeypatch.setattr(cpu_pool.subprocess, "Popen", cannot_start)
    failed = helper_events("failed")

    with pytest.raises(HelperLost, match="did not start"):
        pool.warm(pid_of, MIN_WAIT)
    assert helper_events("failed") == failed + 1
    assert pool.submit(pid_of, [1, 2]).result() == [os.getpid()] * 2
    assert len(starts) == 1 and pool.pids() == []  # not tried again at once


def test_a_closed_pool_refuses_work(pool: ProcessPool) -> None:
    pool.warm(pid_of, MIN_WAIT)
    helpers = pool.pids()

    pool.close()

    with pytest.raises(RuntimeError, match="closed"):
        pool.submit(pid_of, [0])
    wait_until(lambda: not any(alive(pid) for pid in helpers))


def test_the_helpers_end_when_their_process_is_killed() -> None:
    # The owner's code comes from its standard input: no main module a helper could rerun.
    script = (
        "import time\n"
        "from caljournal.adapters.cpu_pool import ProcessPool\n"
        "from tests.support.cpu_work import pid_of\n"
        "pool = ProcessPool(2)\n"
        "pool.warm(pid_of, 600)\n"
        "first, second = pool.submit(pid_of, [0]), pool.submit(pid_of, [0])\n"
        "print(first.result()[0], second.result()[0], flush=True)\n"
        "time.sleep(600)\n"
    )
    owner = subprocess.Popen(
        [sys.executable, "-"], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert owner.stdin is not None and owner.stdout is not None
        owner.stdin.write(script)
        owner.stdin.close()
        helpers = [int(pid) for pid in owner.stdout.readline().split()]
        assert len(helpers) == 2 and owner.pid not in helpers
        assert all(alive(pid) and parent_of(pid) == owner.pid for pid in helpers)

        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=MIN_WAIT)

        wait_until(lambda: not any(alive(pid) for pid in helpers))
    finally:
        owner.kill()
        owner.wait()


def test_an_exception_of_the_function_reaches_the_caller(pool: ProcessPool) -> None:
    pool.warm(pid_of, MIN_WAIT)
    job = pool.submit(int, ["12", "twelve"])

    with pytest.raises(ValueError, match="twelve"):
        job.result()
    helpers = pool.pids()
    assert pool.submit(int, ["7"]).result() == [7] and pool.pids() == helpers  # it lives on


def test_one_helper_by_default_on_two_cpus_none_on_one(monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_processes(3) == 3 and default_processes(0) == 0
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: {0, 1})
    assert default_processes(None) == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: {0})
    assert default_processes(None) == 0


def test_the_container_builds_the_pool_from_the_settings(tmp_path: Path) -> None:
    def container_with(processes: int) -> object:
        built = bootstrap(
            load_settings(
                database_url=f"sqlite:///{tmp_path / f'{processes}.sqlite'}",
                secret_key_file=tmp_path / "k",
                parse_processes=processes,
            )
        )
        pool = built.cpu_pool
        assert built.outbound_worker().pool is pool
        built.close()
        return pool

    assert isinstance(container_with(0), InlinePool)
    two = container_with(2)
    assert isinstance(two, ProcessPool) and two.processes == 2
    with pytest.raises(RuntimeError, match="closed"):
        two.submit(pid_of, [0])  # the container closed it


def test_the_parsing_helper_loads_the_calendar_readers_alone() -> None:
    """What a parsing helper imports to run ``parse_object``: no journal, push path or caldav."""
    probe = (
        "import sys\n"
        "from caljournal.projections.inbound_parse import parse_object\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    )
    loaded = set(done.stdout.split())
    assert "icalendar" in loaded  # the probe saw the parser's own imports
    # Helpers import a function's module: the poll hands them this one.
    assert chunk_parse.__module__ == "caljournal.projections.inbound_parse"
    heavy = {
        "caldav",
        "niquests",
        "eventsourcing",
        "psycopg",
        "pydantic",
        "caljournal.adapters.journal",
        "caljournal.projections.push",
        "caljournal.projections.inbound_decide",
    }
    assert loaded.isdisjoint(heavy), sorted(loaded & heavy)
