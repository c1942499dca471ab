"""Normalising what users type as a calendar address, before any network access."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from caljournal.adapters.calendar_url import (
    CalendarURLError,
    Candidate,
    Credentials,
    candidate_urls,
    normalise,
    redact_url,
    same_site,
    split_secret_query,
)
from caljournal.adapters.providers import PROFILES_BY_KEY, get_profile

# (what the user typed, profile key given or None to detect, detected key, first URL)
PROVIDER_ROWS: list[tuple[str, str | None, str, str]] = [
    (
        "https://p42-caldav.icloud.com/123456789/calendars/home/",
        None,
        "icloud",
        "https://p42-caldav.icloud.com/123456789/calendars/home/",
    ),
    (
        "https://calendar.google.com/calendar/ical/alice%40gmail.com/private-0123abcd/basic.ics",
        None,
        "google",
        "https://apidata.googleusercontent.com/caldav/v2/alice%40gmail.com/events",
    ),
    (
        "https://mail.example.com/dav/alice@example.com/Calendar/",
        None,
        "zimbra",
        "https://mail.example.com/dav/alice@example.com/Calendar/",
    ),
    (
        "cloud.example.com/remote.php/dav/calendars/alice/personal/",
        None,
        "nextcloud",
        "https://cloud.example.com/remote.php/dav/calendars/alice/personal/",
    ),
    ("alice@fastmail.com", None, "fastmail", "https://caldav.fastmail.com/dav/"),
    ("alice@mailbox.org", None, "mailbox_org", "https://dav.mailbox.org/caldav/"),
    ("posteo.de", None, "posteo", "https://posteo.de:8443/"),
    (
        "https://daylite.example.com/caldav/alice/",
        "daylite",
        "daylite",
        "https://daylite.example.com/caldav/alice/",
    ),
    (
        "https://w0123456.kasserver.com/calendars/alice/1/",
        None,
        "all_inkl",
        "https://w0123456.kasserver.com/calendars/alice/",
    ),
    (
        "radicale.example.com:5232/alice/8c1f0e6a/",
        None,
        "radicale",
        "https://radicale.example.com:5232/alice/8c1f0e6a/",
    ),
    (
        "https://dav.example.com/alice/calendars/calendar/",
        "xandikos",
        "xandikos",
        "https://dav.example.com/alice/calendars/calendar/",
    ),
    (
        "https://dav.example.com/dav.php/calendars/alice/default/",
        None,
        "baikal",
        "https://dav.example.com/dav.php/calendars/alice/default/",
    ),
    (
        "https://cal.example.com/caldav.php/alice/calendar/",
        None,
        "davical",
        "https://cal.example.com/caldav.php/alice/calendar/",
    ),
    (
        "https://nas.synology.me:5001/caldav/alice/home/",
        None,
        "synology",
        "https://nas.synology.me:5001/caldav/alice/home/",
    ),
    (
        "https://mail.example.com/SOGo/dav/alice/Calendar/personal/",
        None,
        "sogo",
        "https://mail.example.com/SOGo/dav/alice/Calendar/personal/",
    ),
    ("calendar.example.org", None, "generic", "https://calendar.example.org/.well-known/caldav"),
]


def test_the_provider_table_covers_every_profile() -> None:
    assert {row[2] for row in PROVIDER_ROWS} == set(PROFILES_BY_KEY)


@pytest.mark.parametrize(
    ("raw", "given", "key", "first"), PROVIDER_ROWS, ids=[row[2] for row in PROVIDER_ROWS]
)
def test_first_candidate_per_provider(raw: str, given: str | None, key: str, first: str) -> None:
    result = normalise(raw, get_profile(given) if given else None)
    assert result.profile.key == key
    assert result.candidates[0].url == first
    assert result.candidates[0].reason
    assert candidate_urls(raw, result.profile)[0].url == first


def test_full_calendar_url_is_kept_first_with_discovery_fallbacks() -> None:
    urls = [
        c.url for c in candidate_urls("https://cloud.example.com/remote.php/dav/calendars/a/b/")
    ]
    assert urls == [
        "https://cloud.example.com/remote.php/dav/calendars/a/b/",
        "https://cloud.example.com/remote.php/dav/",
        "https://cloud.example.com/.well-known/caldav",
    ]


def test_object_name_gives_its_collection() -> None:
    first = candidate_urls("https://cal.example.org/dav/alice/work/event.ics")[0]
    assert first == Candidate(
        "https://cal.example.org/dav/alice/work/",
        "dropped the object name 'event.ics' to get its calendar collection",
    )
    urls = [c.url for c in candidate_urls("https://cal.example.org/dav/alice/work/event.ics")]
    assert "https://cal.example.org/dav/alice/work/event.ics" not in urls


def test_all_inkl_trailing_segment_is_trimmed_and_the_failing_url_dropped() -> None:
    result = candidate_urls("https://w0123456.kasserver.com/calendars/alice/1/")
    assert result[0].reason == "trimmed All-Inkl's trailing '/1/' segment"
    assert "https://w0123456.kasserver.com/calendars/alice/1/" not in [c.url for c in result]


def test_unknown_host_trailing_number_is_tried_as_given_then_trimmed() -> None:
    result = candidate_urls("https://cal.example.org/dav/alice/1/")
    assert [c.url for c in result[:2]] == [
        "https://cal.example.org/dav/alice/1/",
        "https://cal.example.org/dav/alice/",
    ]
    assert result[1].reason.startswith("dropped the trailing '/1/' segment")


def test_nextcloud_web_page_becomes_the_dav_root() -> None:
    first = candidate_urls("https://cloud.example.com/index.php/apps/calendar/dayGridMonth/now")[0]
    assert first.url == "https://cloud.example.com/remote.php/dav/"


def test_bare_domain_of_unknown_server() -> None:
    assert [c.url for c in candidate_urls("calendar.example.org")] == [
        "https://calendar.example.org/.well-known/caldav",
        "https://calendar.example.org/",
    ]


def test_bare_domain_with_profile_tries_the_profile_path_first() -> None:
    urls = [c.url for c in candidate_urls("cloud.example.com", get_profile("nextcloud"))]
    assert urls == [
        "https://cloud.example.com/remote.php/dav/",
        "https://cloud.example.com/.well-known/caldav",
        "https://cloud.example.com/",
    ]


def test_email_of_known_provider_and_of_unknown_domain() -> None:
    assert [c.url for c in candidate_urls("alice@me.com")] == [
        "https://caldav.icloud.com/",
        "https://me.com/.well-known/caldav",
    ]
    assert [c.url for c in candidate_urls("alice@gmail.com")] == [
        "https://apidata.googleusercontent.com/caldav/v2/alice@gmail.com/events",
    ]
    assert [c.url for c in candidate_urls("alice@example.com")] == [
        "https://example.com/.well-known/caldav",
    ]
    assert normalise("alice@example.com").profile.key == "generic"


def test_missing_scheme_becomes_https() -> None:
    first = candidate_urls("cal.example.org/dav/alice/")[0]
    assert first.url == "https://cal.example.org/dav/alice/"
    assert "https://" in first.reason and not first.insecure


def test_plain_http_is_kept_but_flagged() -> None:
    result = candidate_urls("http://cal.example.org/dav/alice/")
    assert result[0].url == "http://cal.example.org/dav/alice/"
    assert result[0].insecure and "plain http" in result[0].reason
    assert all(c.insecure for c in result)


def test_https_is_not_flagged() -> None:
    assert not any(c.insecure for c in candidate_urls("https://cal.example.org/dav/alice/"))


def test_embedded_credentials_are_returned_apart_and_never_in_a_url() -> None:
    result = normalise("https://alice%40example.com:s3cr%3At@cal.example.org/dav/alice/")
    assert result.credentials == Credentials("alice@example.com", "s3cr:t")
    assert "s3cr" not in repr(result)
    assert all("@cal" not in c.url and "s3cr" not in c.url for c in result.candidates)
    assert result.candidates[0].url == "https://cal.example.org/dav/alice/"


def test_user_name_without_password() -> None:
    assert normalise("https://alice@cal.example.org/").credentials == Credentials("alice", None)
    assert normalise("https://cal.example.org/").credentials is None


def test_fragment_dropped_host_lowered_idna_encoded() -> None:
    assert candidate_urls("HTTPS://CAL.Example.ORG/dav/Alice/#x")[0].url == (
        "https://cal.example.org/dav/Alice/"
    )
    assert candidate_urls("https://kalender.müller.de/dav/")[0].url == (
        "https://kalender.xn--mller-kva.de/dav/"
    )


def test_surrounding_whitespace_is_ignored() -> None:
    assert (
        candidate_urls("  https://cal.example.org/dav/\n")[0].url == "https://cal.example.org/dav/"
    )


def test_ipv6_literal_and_port() -> None:
    assert candidate_urls("https://[2001:db8::1]:8443/dav/")[0].url == (
        "https://[2001:db8::1]:8443/dav/"
    )


def test_duplicates_are_removed() -> None:
    urls = [c.url for c in candidate_urls("https://radicale.example.com:5232/")]
    assert len(urls) == len(set(urls))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "The calendar address is empty."),
        ("   \t", "The calendar address is empty."),
        (
            "https://cal.example.org/my calendar/",
            "The calendar address contains a space; paste the address without spaces.",
        ),
        ("https://cal.example.org/\x00", "The calendar address contains a control character."),
        (
            "ftp://cal.example.org/",
            "Only http and https calendar addresses are supported, not ftp: addresses.",
        ),
        (
            "file:///etc/passwd",
            "Only http and https calendar addresses are supported, not file: addresses.",
        ),
        (
            "javascript:alert(1)",
            "Only http and https calendar addresses are supported, not javascript: addresses.",
        ),
        (
            "webcal://cal.example.org/feed.ics",
            "A webcal: address is a read-only subscription; "
            "give the CalDAV address of the calendar instead.",
        ),
        ("https://", "The calendar address has no host name."),
        ("http:/cal.example.org", "The calendar address has no host name."),
        (
            "https://cal.example.org:99999/",
            "The port in the calendar address must be a number from 1 to 65535.",
        ),
        (
            "https://cal.example.org:0/",
            "The port in the calendar address must be a number from 1 to 65535.",
        ),
        ("https://-cal.example.org/", "The host name '-cal.example.org' is not valid."),
        ("https://cal..example.org/", "The host name 'cal..example.org' is not valid."),
        ("https://[not-ipv6]/", "The host in the calendar address is not valid."),
        (
            "https://cal.example.org/" + "a" * 2100,
            "The calendar address is longer than 2048 characters.",
        ),
    ],
)
def test_invalid_input_is_refused_with_one_clear_sentence(raw: str, message: str) -> None:
    with pytest.raises(CalendarURLError) as caught:
        candidate_urls(raw)
    assert str(caught.value) == message
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("https://alice:s3cret@cal.example.org/dav/", "https://***@cal.example.org/dav/"),
        ("https://alice@cal.example.org:8443/dav/", "https://***@cal.example.org:8443/dav/"),
        ("https://cal.example.org/dav/?token=abc#frag", "https://cal.example.org/dav/?***"),
        ("https://cal.example.org/dav/", "https://cal.example.org/dav/"),
        ("https://alice:pw@cal.example.org:99999/", "https://***@cal.example.org:99999/"),
        ("garbage //alice:pw@host", "garbage //***@host"),
    ],
)
def test_redact_url(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


@given(st.text(max_size=300))
def test_any_text_is_either_refused_cleanly_or_gives_http_candidates(raw: str) -> None:
    try:
        result = normalise(raw)
    except CalendarURLError as error:
        assert str(error).endswith(".")
        return
    assert result.candidates
    for candidate in result.candidates:
        assert candidate.url.startswith(("https://", "http://"))
        assert candidate.reason
        assert "@" not in urlsplit(candidate.url).netloc


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("https://p12-caldav.icloud.com/1/", "https://caldav.icloud.com/", True),
        ("https://dav.example.co.uk/", "https://cal.example.co.uk/", True),
        # Two labels are not a site: co.uk and github.io are public suffixes.
        ("https://alice.co.uk/", "https://mallory.co.uk/", False),
        ("https://alice.github.io/", "https://mallory.github.io/", False),
        ("https://example.com/", "https://example.com.evil.net/", False),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:9090/", True),
        ("http://10.0.0.1/", "http://10.0.0.2/", False),
        ("http://localhost/", "http://other/", False),
        ("/davical/caldav.php/admin/", "https://example.com/", False),
    ],
)
def test_same_site_follows_the_public_suffix_list(a: str, b: str, same: bool) -> None:
    assert same_site(a, b) is same
    assert same_site(b, a) is same


@pytest.mark.parametrize(
    ("raw", "url", "query"),
    [
        (
            "https://cal.example.com/dav/?token=s3cr3t",
            "https://cal.example.com/dav/",
            "token=s3cr3t",
        ),
        ("cal.example.com/dav?k=1&sig=2#frag", "cal.example.com/dav", "k=1&sig=2"),
        ("https://cal.example.com/dav/", "https://cal.example.com/dav/", None),
        ("https://cal.example.com/dav/?", "https://cal.example.com/dav/", None),
    ],
)
def test_the_whole_query_string_is_taken_out_as_a_secret(
    raw: str, url: str, query: str | None
) -> None:
    assert split_secret_query(raw) == (url, query)
