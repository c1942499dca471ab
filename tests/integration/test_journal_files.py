"""Where the embedded journal and its key live, and who may read them."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from caljournal.bootstrap import bootstrap
from caljournal.settings import load_settings
from tests.conftest import operator


@pytest.fixture
def world_readable_umask() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("world_readable_umask")
def test_the_sqlite_journal_and_its_wal_and_shm_files_are_private(tmp_path: Path) -> None:
    journal = tmp_path / "journal.sqlite"
    built = bootstrap(
        load_settings(database_url=f"sqlite:///{journal}", secret_key_file=tmp_path / "k.key")
    )
    try:
        built.accounts.open_account("acme", operator())
        files = sorted(tmp_path.glob("journal.sqlite*"))
        assert [f.name for f in files] == [
            "journal.sqlite",
            "journal.sqlite-shm",
            "journal.sqlite-wal",
        ]
        assert {f.name: _mode(f) for f in files} == {f.name: 0o600 for f in files}
    finally:
        built.close()


@pytest.mark.usefixtures("world_readable_umask")
def test_by_default_journal_and_key_share_a_private_per_user_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    folder = tmp_path / "data" / "caljournal"
    assert settings.sqlite_path == folder / "caljournal.sqlite"
    assert settings.key_file == folder / "caljournal.key"
    built = bootstrap(settings)
    try:
        built.secret_box()  # creates the key file
    finally:
        built.close()
    assert _mode(folder) == 0o700
    assert _mode(folder / "caljournal.sqlite") == 0o600
    assert _mode(folder / "caljournal.key") == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
