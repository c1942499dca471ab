"""Rules the test suite keeps about itself, checked on its own source.

Example counts of property-based tests come from the hypothesis profile (a test
against real servers may run a share of it, computed from the profile), so CI
stays fast and a long run (``HYPOTHESIS_PROFILE=long``) searches deeper
everywhere. Every HTTP request a test makes names a generous timeout: httpx's
default of 5 s fails a test when the machine is busy, not when it is wrong.
"""

from __future__ import annotations

import ast
from pathlib import Path

from hypothesis import settings

from tests.unit import test_sync_state_machine as machine

TESTS = Path(__file__).resolve().parents[1]
HTTPX_CALLS = {"get", "put", "post", "patch", "delete", "head", "request", "stream", "Client"}


def _test_sources() -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text())) for path in sorted(TESTS.rglob("*.py"))]


def _calls(tree: ast.Module) -> list[ast.Call]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)]


def test_no_test_sets_its_own_example_count() -> None:
    offenders = [
        f"{path.relative_to(TESTS)}:{call.lineno}"
        for path, tree in _test_sources()
        if path.name != "conftest.py"
        for call in _calls(tree)
        if any(
            keyword.arg == "max_examples" and isinstance(keyword.value, ast.Constant)
            for keyword in call.keywords
        )
    ]
    assert offenders == [], "max_examples belongs in the profiles of tests/conftest.py"


def test_the_sync_state_machine_runs_as_many_examples_as_the_profile_says() -> None:
    assert machine.TestSyncStateMachine.settings.max_examples == settings.default.max_examples


def test_the_long_profile_searches_more_than_the_default_one() -> None:
    assert settings.get_profile("long").max_examples > settings.get_profile("ci").max_examples


def test_every_http_request_of_the_tests_names_its_timeout() -> None:
    offenders = [
        f"{path.relative_to(TESTS)}:{call.lineno}"
        for path, tree in _test_sources()
        for call in _calls(tree)
        if isinstance(call.func, ast.Attribute)
        and isinstance(call.func.value, ast.Name)
        and call.func.value.id == "httpx"
        and call.func.attr in HTTPX_CALLS
        and not any(keyword.arg == "timeout" for keyword in call.keywords)
    ]
    assert offenders == [], "httpx's default timeout (5 s) is too short on a busy machine"
