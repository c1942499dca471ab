"""A test client that holds every answer of the API to the OpenAPI document it publishes.

Each response a test receives is checked: its path and method are documented,
its status code is documented for them, and a JSON body validates against the
documented schema (response models forbid fields they do not name, so an
undocumented field fails too). Times are written one way everywhere: with a
numeric UTC offset (``+00:00``), never ``Z``.
"""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator, FormatChecker

_ZULU = re.compile(r"^\d{4}-\d{2}-\d{2}T[0-9:.]+Z$")
# Served by FastAPI itself, not part of the API the document describes.
_TOOLING = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}


class OpenAPIMismatchError(AssertionError):
    """A response says something the published OpenAPI document does not."""


@cache
def _templates(paths: tuple[str, ...]) -> list[tuple[re.Pattern[str], str]]:
    compiled = [
        (re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(p)) + "$"), p) for p in paths
    ]
    # A literal path wins over a template that would also match it.
    return sorted(compiled, key=lambda item: item[1].count("{"))


def _operation(document: dict[str, Any], method: str, path: str) -> dict[str, Any] | None:
    for pattern, template in _templates(tuple(document["paths"])):
        if pattern.match(path):
            operation: dict[str, Any] | None = document["paths"][template].get(method.lower())
            return operation
    return None


def _zulu_times(value: Any, where: str = "$") -> list[str]:
    if isinstance(value, str):
        return [where] if _ZULU.match(value) else []
    if isinstance(value, dict):
        return [hit for k, v in value.items() for hit in _zulu_times(v, f"{where}.{k}")]
    if isinstance(value, list):
        return [hit for i, v in enumerate(value) for hit in _zulu_times(v, f"{where}[{i}]")]
    return []


def _validator(
    document: dict[str, Any], schema: dict[str, Any], cache: dict[str, Draft202012Validator]
) -> Draft202012Validator:
    key = json.dumps(schema, sort_keys=True)
    if key not in cache:
        cache[key] = Draft202012Validator(
            {**schema, "components": document.get("components", {})},
            format_checker=FormatChecker(),
        )
    return cache[key]


def check_response(
    document: dict[str, Any],
    response: httpx.Response,
    cache: dict[str, Draft202012Validator] | None = None,
) -> None:
    """Fail when ``response`` disagrees with the OpenAPI ``document``.

    ``cache`` keeps the validators built for ``document`` (one per schema).

    :raises OpenAPIMismatchError: naming the request and what disagrees.
    """
    request = response.request
    path, method, status = request.url.path, request.method, response.status_code
    label = f"{method} {path} -> {status}"
    if path in _TOOLING:
        return
    operation = _operation(document, method, path)
    if operation is None:
        if status in (404, 405):  # no such route: the router's own answer
            return
        raise OpenAPIMismatchError(f"{label}: the path and method are not documented")
    documented = operation["responses"].get(str(status)) or operation["responses"].get("default")
    if documented is None:
        raise OpenAPIMismatchError(
            f"{label}: status not documented (documented: {sorted(operation['responses'])})"
        )
    if not response.content:
        return
    content = documented.get("content", {})
    media = response.headers.get("content-type", "").split(";")[0].strip()
    if media != "application/json" and media in content:
        return  # a documented body in another format (e.g. text/csv)
    schema = content.get("application/json", {}).get("schema")
    if schema is None:
        raise OpenAPIMismatchError(f"{label}: a body where the document promises none")
    if not response.headers.get("content-type", "").startswith("application/json"):
        raise OpenAPIMismatchError(f"{label}: {response.headers.get('content-type')} is not JSON")
    body = response.json()
    validator = _validator(document, schema, {} if cache is None else cache)
    problems = [
        f"{'/'.join(str(p) for p in e.absolute_path) or '(body)'}: {e.message}"
        for e in validator.iter_errors(body)
    ]
    if problems:
        raise OpenAPIMismatchError(f"{label}: {'; '.join(problems[:5])}")
    zulu = _zulu_times(body)
    if zulu:
        raise OpenAPIMismatchError(f"{label}: times written with Z instead of +00:00 at {zulu}")


class OpenAPIValidatingClient(TestClient):
    """An in-process client of the API that checks every response (see module doc)."""

    def __init__(self, app: FastAPI, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.fastapi_app = app
        self.validators: dict[str, Draft202012Validator] = {}

    def request(self, method: str, url: Any, **kwargs: Any) -> httpx.Response:  # type: ignore[override]
        response = super().request(method, url, **kwargs)
        check_response(self.fastapi_app.openapi(), response, self.validators)
        return response
