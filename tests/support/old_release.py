"""Run an earlier release of caljournal from a commit of this repository, in a subprocess.

The release's tree is taken with ``git archive`` and laid out the way the
package-dir mapping installs it (``caljournal/`` with ``domain``, ``adapters``,
``projections``, ``api`` and ``scripts`` inside); its dependencies are this
environment's. Used to write a database exactly as that release did.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
SUBPACKAGES = ("domain", "adapters", "projections", "api", "scripts")
WRITER = Path(__file__).with_name("old_release_writer.py")


def checkout(commit: str, into: Path) -> Path:
    """Lay out the package of ``commit`` under ``into``; return the directory for sys.path.

    Fails the test (never skips) when the commit is not in this clone.
    """
    found = subprocess.run(
        ["git", "-C", str(REPOSITORY), "cat-file", "-e", f"{commit}^{{commit}}"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    if found.returncode != 0:
        pytest.fail(
            f"commit {commit} (the release whose database this test opens) is not in the "
            f"repository at {REPOSITORY}: clone with full history (git fetch --unshallow)"
        )
    archive = subprocess.run(
        ["git", "-C", str(REPOSITORY), "archive", commit],
        capture_output=True,
        timeout=120,
        check=True,
    ).stdout
    tree = into / "tree"
    tree.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tree, filter="data")
    packages = into / "pkgs"
    packages.mkdir()
    (packages / "caljournal").symlink_to(tree / "caljournal", target_is_directory=True)
    for name in SUBPACKAGES:
        (tree / "caljournal" / name).symlink_to(tree / name, target_is_directory=True)
    return packages


def write_database(packages: Path, **arguments: str) -> dict[str, Any]:
    """Run the release's writer (``old_release_writer.py``); return what it reports."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [sys.executable, str(WRITER), str(packages), json.dumps(arguments)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )
    assert done.returncode == 0, f"the old release failed:\n{done.stdout}\n{done.stderr}"
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report
