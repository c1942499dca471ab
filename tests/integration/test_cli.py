"""The ``caljournal`` command, run as a real process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg

from caljournal.bootstrap import Container, bootstrap
from caljournal.settings import load_settings
from tests.support.patience import HTTP_TIMEOUT, MIN_WAIT
from tests.support.ports import free_port


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``caljournal ARGS`` in ``cwd`` with a data directory of the test's own."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CALJOURNAL_")}
    environment["XDG_DATA_HOME"] = str(data_home(cwd))
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-m", "caljournal", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def data_home(cwd: Path) -> Path:
    """Return the XDG_DATA_HOME that ``run`` gives commands started in ``cwd``."""
    return cwd.parent / f"{cwd.name}-data-home"


def default_journal(cwd: Path) -> Path:
    return data_home(cwd) / "caljournal" / "caljournal.sqlite"


def commands_container(cwd: Path) -> Container:
    """Open the journal (and key) that commands started by ``run`` in ``cwd`` use."""
    return bootstrap(
        load_settings(
            database_url=f"sqlite:///{default_journal(cwd)}",
            secret_key_file=default_journal(cwd).parent / "caljournal.key",
            allow_private_addresses=True,
        )
    )


def journal_line(result: subprocess.CompletedProcess[str]) -> str:
    """Return the line naming the journal, which every command writes to stderr first."""
    first = result.stderr.splitlines()[0]
    assert first.startswith("journal: "), result.stderr
    return first


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    """Return stderr without the line naming the journal."""
    lines = result.stderr.strip().splitlines()
    return lines[1:] if lines and lines[0].startswith("journal: ") else lines


def test_account_and_token_lifecycle(tmp_path: Path) -> None:
    created = run(["account", "create", "acme"], tmp_path)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("cj_") and default_journal(tmp_path).exists()
    assert not (tmp_path / "caljournal.sqlite").exists()

    again = run(["account", "create", "ACME"], tmp_path)
    assert again.returncode == 1
    assert error_lines(again) == ["error: an account named 'ACME' exists already"]
    assert "Traceback" not in again.stderr

    second = run(["token", "create", "frontdesk", "--account", "acme"], tmp_path)
    assert second.returncode == 0 and second.stdout.strip().startswith("cj_")
    table = run(["token", "list", "--account", "acme"], tmp_path)
    assert "frontdesk" in table.stdout and "default" in table.stdout
    assert token not in table.stdout
    listed = json.loads(run(["token", "list", "--account", "acme", "--json"], tmp_path).stdout)
    assert {t["name"] for t in listed} == {"default", "frontdesk"}
    token_id = next(t["id"] for t in listed if t["name"] == "frontdesk")
    revoked = run(["token", "revoke", token_id], tmp_path)
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked" in run(["token", "list", "--account", "acme"], tmp_path).stdout
    twice = run(["token", "revoke", token_id], tmp_path)
    assert twice.returncode == 1 and "revoked already" in twice.stderr


def test_user_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    cases = [
        (["account", "create", "bad name!"], {}),
        (["token", "create", "x"], {}),
        (["token", "revoke", "not-a-uuid"], {}),
        (["token", "list", "--account", "nobody"], {}),
        (["account", "list"], {"CALJOURNAL_DATABASE_URL": "mysql://localhost/x"}),
        (["account", "list"], {"CALJOURNAL_PORT": "99999999"}),
    ]
    for args, env in cases:
        result = run(args, tmp_path, **env)
        assert result.returncode in (1, 2), (args, result.stderr)
        lines = error_lines(result)
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, result.stderr)
        assert "Traceback" not in result.stderr


def test_a_second_shell_in_another_folder_uses_the_same_journal(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    same_data = {"XDG_DATA_HOME": str(tmp_path / "data")}
    created = run(["account", "create", "acme"], first, **same_data)
    assert created.returncode == 0, created.stderr
    listed = run(["account", "list", "--json"], second, **same_data)
    assert [a["name"] for a in json.loads(listed.stdout)] == ["acme"]
    journal = tmp_path / "data" / "caljournal" / "caljournal.sqlite"
    for result in (created, listed):
        assert journal_line(result) == f"journal: {journal} (the per-user default)"
    assert list(first.iterdir()) == [] and list(second.iterdir()) == []


def test_a_journal_in_the_working_directory_is_kept_and_named(tmp_path: Path) -> None:
    old_default = {"CALJOURNAL_DATABASE_URL": "sqlite:///caljournal.sqlite"}
    assert run(["account", "create", "acme"], tmp_path, **old_default).returncode == 0
    listed = run(["account", "list", "--json"], tmp_path)
    assert [a["name"] for a in json.loads(listed.stdout)] == ["acme"]
    assert journal_line(listed).startswith(
        f"journal: {tmp_path / 'caljournal.sqlite'} (found in the working directory; "
        f"new installations use {default_journal(tmp_path)})"
    )
    assert not default_journal(tmp_path).exists()


def test_json_output_stays_json_while_the_journal_is_named_on_stderr(tmp_path: Path) -> None:
    run(["account", "create", "acme"], tmp_path)
    listed = run(["token", "list", "--account", "acme", "--json"], tmp_path)
    assert [t["name"] for t in json.loads(listed.stdout)] == ["default"]
    assert journal_line(listed) == f"journal: {default_journal(tmp_path)} (the per-user default)"


def test_retry_failed_without_a_link_exits_1_like_the_other_link_commands(tmp_path: Path) -> None:
    run(["account", "create", "acme"], tmp_path)
    for args in (["retry-failed", "acme"], ["link", "show", "acme"]):
        result = run(args, tmp_path)
        assert result.returncode == 1, (args, result.stderr)
        assert error_lines(result) == ["error: this account has no calendar link"], args


def test_backfill_and_replay_refused_print_the_error_with_no_blank_line(tmp_path: Path) -> None:
    run(["account", "create", "acme"], tmp_path)
    for args in (["backfill", "--account", "acme"], ["replay", "--account", "acme", "--yes"]):
        result = run(args, tmp_path)
        assert result.returncode == 1, (args, result.stderr)
        assert error_lines(result) == ["error: this account has no calendar link"], args
        assert "" not in result.stderr.splitlines(), result.stderr


def test_serve_on_a_busy_port_fails_at_once_with_one_sentence(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(["serve", "--port", str(port)], tmp_path)
    assert result.returncode == 1
    assert error_lines(result) == [
        f"error: cannot listen on 127.0.0.1:{port}: the port is in use by another program; "
        "choose another with --port"
    ]
    assert "Application startup complete" not in result.stderr + result.stdout


def test_an_unreachable_postgresql_is_named_with_its_cause(tmp_path: Path) -> None:
    port = free_port()
    result = run(
        ["account", "list"],
        tmp_path,
        CALJOURNAL_DATABASE_URL=f"postgresql://root:s3cret@127.0.0.1:{port}/test",
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: cannot open the PostgreSQL journal (host 127.0.0.1, port {port}, "
        "database 'test'): Connection refused"
    ]


def test_a_missing_postgresql_database_is_named_with_its_cause(
    tmp_path: Path, pg_admin: psycopg.Connection
) -> None:
    info = pg_admin.info
    url = f"postgresql://{info.user}@{info.host}:{info.port}/no_such_database"
    result = run(["account", "list"], tmp_path, CALJOURNAL_DATABASE_URL=url)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: cannot open the PostgreSQL journal (host {info.host}, port {info.port}, "
        "database 'no_such_database'): database \"no_such_database\" does not exist"
    ]


def test_serve_runs_on_the_embedded_defaults_with_no_set_up(tmp_path: Path) -> None:
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CALJOURNAL_")}
    environment["XDG_DATA_HOME"] = str(data_home(tmp_path))
    process = subprocess.Popen(
        [sys.executable, "-m", "caljournal", "serve", "--port", str(port)],
        cwd=tmp_path,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + MIN_WAIT
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=HTTP_TIMEOUT)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                assert time.monotonic() < deadline, f"serve did not answer within {MIN_WAIT} s"
                time.sleep(0.1)
        assert health.json() == {"status": "ok", "journal": "sqlite", "position": 0}
        token = run(["account", "create", "acme"], tmp_path).stdout.strip()
        booked = httpx.post(
            f"http://127.0.0.1:{port}/appointments",
            json={
                "title": "First",
                "start": "2026-03-27T10:00:00+01:00",
                "end": "2026-03-27T11:00:00+01:00",
                "timezone": "Europe/Berlin",
            },
            headers={"Authorization": f"Bearer {token}"},
            timeout=HTTP_TIMEOUT,
        )
        assert booked.status_code == 201
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=MIN_WAIT)
    assert stderr.splitlines()[0] == f"journal: {default_journal(tmp_path)} (the per-user default)"
