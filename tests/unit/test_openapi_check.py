"""The suite's OpenAPI check catches what it exists to catch (a small app, in process)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from tests.support.openapi import OpenAPIMismatchError, OpenAPIValidatingClient


class Thing(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    at: str


def _app(answer: dict[str, Any], status: int = 200) -> FastAPI:
    app = FastAPI()

    @app.get("/things/{thing_id}", response_model=Thing)
    def thing(thing_id: int) -> JSONResponse:
        return JSONResponse(answer, status_code=status)

    return app


def test_a_documented_answer_passes() -> None:
    with OpenAPIValidatingClient(_app({"name": "a", "at": "2026-03-27T10:00:00+00:00"})) as c:
        assert c.get("/things/1").status_code == 200


@pytest.mark.parametrize(
    ("answer", "status", "complaint"),
    [
        ({"name": "a", "at": "x", "secret": 1}, 200, "Additional properties"),
        ({"name": "a"}, 200, "'at' is a required property"),
        ({"name": "a", "at": "x"}, 409, "status not documented"),
        ({"name": "a", "at": "2026-03-27T10:00:00Z"}, 200, r"with Z instead of \+00:00"),
    ],
)
def test_an_answer_the_document_does_not_describe_fails(
    answer: dict[str, Any], status: int, complaint: str
) -> None:
    with (
        OpenAPIValidatingClient(_app(answer, status)) as client,
        pytest.raises(OpenAPIMismatchError, match=complaint),
    ):
        client.get("/things/1")


def test_an_undocumented_route_fails() -> None:
    app = _app({"name": "a", "at": "x"})

    @app.get("/hidden", include_in_schema=False)
    def hidden() -> dict[str, str]:
        return {"a": "b"}

    with OpenAPIValidatingClient(app) as client, pytest.raises(OpenAPIMismatchError):
        client.get("/hidden")
