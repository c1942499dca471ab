"""The ``caljournal`` command, run as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.patience import HTTP_TIMEOUT
from tests.support.ports import free_port


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CALJOURNAL_")}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-m", "caljournal", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_account_and_token_lifecycle(tmp_path: Path) -> None:
    created = run(["account", "create", "acme"], tmp_path)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("cj_") and (tmp_path / "caljournal.sqlite").exists()

    again = run(["account", "create", "ACME"], tmp_path)
    assert again.returncode == 1
    assert again.stderr.strip() == "error: an account named 'ACME' exists already"
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
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, result.stderr)
        assert "Traceback" not in result.stderr


def test_serve_runs_on_the_embedded_defaults_with_no_set_up(tmp_path: Path) -> None:
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CALJOURNAL_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "caljournal", "serve", "--port", str(port)],
        cwd=tmp_path,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                assert time.monotonic() < deadline, "serve did not answer within 20 s"
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
        process.wait(timeout=10)
