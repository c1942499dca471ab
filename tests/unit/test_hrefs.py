"""An href joined by hand is exactly what the caldav library's join makes of it."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit, urlunsplit

import pytest
from caldav.lib.url import URL, normalise_path
from hypothesis import example, given
from hypothesis import strategies as st

from caljournal.adapters.hrefs import HrefJoiner

BASES = [
    "http://127.0.0.1:5232/alice/calendar/",
    "https://dav.example.org/calendars/bench",
    "https://user@dav.example.org:8443/dav.php/calendars/a%40b.example/work/",
    "http://[::1]:8000/user/calendars/calendar/",
]
# Path characters servers send, the awkward ones included: quoting, "@" both ways,
# parameters, queries, fragments, dot segments, non-ASCII, line breaks.
PIECES = st.sampled_from(
    [
        "a",
        "b.ics",
        "%40",
        "@",
        "%2F",
        " ",
        "é",
        ";p=1",
        "?q",
        "#f",
        "..",
        ".",
        "//",
        "\r\n",
        ":",
        "~",
    ]
)


@given(
    base=st.sampled_from(BASES),
    pieces=st.lists(PIECES, max_size=8),
    absolute=st.booleans(),
)
def test_the_join_equals_the_librarys(base: str, pieces: list[str], absolute: bool) -> None:
    href = ("/" if absolute else "") + "/".join(pieces)

    try:
        expected = str(URL(base).join(href))
    except ValueError:
        with pytest.raises(ValueError):
            HrefJoiner(URL(base)).join(href)
        return
    assert HrefJoiner(URL(base)).join(href) == expected


def test_an_href_on_another_host_is_refused_as_the_library_does() -> None:
    with pytest.raises(ValueError, match="can't be joined"):
        HrefJoiner(URL(BASES[0])).join("https://elsewhere.example/alice/calendar/x.ics")
    assert HrefJoiner(URL(BASES[0])).join("/alice/calendar/x%40y.ics") == (
        "http://127.0.0.1:5232/alice/calendar/x%40y.ics"
    )


@given(
    base=st.sampled_from(BASES),
    pieces=st.lists(PIECES, max_size=8),
    member=st.booleans(),
    preserve=st.booleans(),
)
# A member's name that only looks like one: the rest is a query, a fragment or parameters.
@example(base=BASES[0], pieces=["?q"], member=True, preserve=False)
@example(base=BASES[0], pieces=["#f"], member=True, preserve=False)
@example(base=BASES[2], pieces=["b.ics;p=1"], member=True, preserve=True)
def test_a_plain_href_is_spelled_as_its_joined_url_is(
    base: str, pieces: list[str], member: bool, preserve: bool
) -> None:
    """The short way for plain absolute paths gives what taking the joined URL apart gives."""
    joiner = HrefJoiner(URL(base))
    folder = urlsplit(str(URL(base))).path.rstrip("/") + "/" if member else "/"
    href = folder + "/".join(pieces)
    try:
        expected = _spelled_from_join(joiner, href, preserve)
    except ValueError:
        with pytest.raises(ValueError):
            joiner.spelled(href, preserve)
        return
    assert joiner.spelled(href, preserve) == expected


def _spelled_from_join(joiner: HrefJoiner, href: str, preserve: bool) -> str:
    """Spell ``href`` the general way: its joined URL taken apart (the oracle)."""
    parts = urlsplit(joiner.join(href))
    folder, _, name = parts.path.rpartition("/")
    if name and unquote(folder + "/") == unquote(urlsplit(joiner.calendar_url).path):
        return joiner.calendar_url + normalise_path(name, safe="", preserve_at=preserve)
    return urlunsplit(parts._replace(path=normalise_path(parts.path, preserve_at=preserve)))
