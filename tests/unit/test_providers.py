"""Provider profiles: lookups, capability facts, and agreement with caldav's hints."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import pytest
from caldav import compatibility_hints
from caldav.compatibility_hints import FeatureSet
from caldav.config import resolve_features

from caljournal.adapters.providers import (
    CAPABILITY_FLAGS,
    GENERIC,
    PROFILES,
    PROFILES_BY_KEY,
    ProviderProfile,
    UnknownProviderError,
    get_profile,
    is_partition_host,
    profile_for_email,
    profile_for_url,
    render_base_url,
)

EXPECTED_KEYS = {
    "icloud",
    "google",
    "zimbra",
    "nextcloud",
    "fastmail",
    "mailbox_org",
    "posteo",
    "daylite",
    "all_inkl",
    "radicale",
    "xandikos",
    "baikal",
    "davical",
    "synology",
    "sogo",
    "generic",
}
HINTED = [p for p in PROFILES if p.caldav_hints is not None]


def test_every_expected_provider_has_a_profile() -> None:
    assert set(PROFILES_BY_KEY) == EXPECTED_KEYS
    assert len(PROFILES) == len(EXPECTED_KEYS)


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.key)
def test_profile_is_well_formed(profile: ProviderProfile) -> None:
    assert profile.display_name
    assert profile.unverified <= set(CAPABILITY_FLAGS)
    assert all(note.strip() for note in profile.notes)
    if profile.base_url is not None:
        assert profile.base_url.startswith(("https://", "{base}/"))


# --- caldav compatibility hints ------------------------------------------------


@pytest.mark.parametrize("profile", HINTED, ids=lambda p: p.key)
def test_caldav_hint_name_exists(profile: ProviderProfile) -> None:
    name = profile.caldav_hints
    assert name is not None
    assert isinstance(getattr(compatibility_hints, name, None), dict), name
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an unknown feature name in the hints would warn
        FeatureSet(resolve_features(name))


def test_profiles_without_a_caldav_hint_profile() -> None:
    unhinted = {p.key for p in PROFILES if p.caldav_hints is None}
    assert unhinted == {"google", "fastmail", "daylite", "all_inkl", "generic"}


def _declared(profile: ProviderProfile, feature: str) -> str | None:
    """Return the support level the hints state for ``feature``, if stated."""
    assert profile.caldav_hints is not None
    value: Any = resolve_features(profile.caldav_hints).get(feature)
    if isinstance(value, bool):
        return "full" if value else "unsupported"
    if isinstance(value, dict):
        return value.get("support")
    return value


# For each flag: the hint feature it follows and the flag value per support level.
HINT_RULES: dict[str, tuple[str, dict[str, Any]]] = {
    "supports_if_none_match": (
        "save.if-none-match",
        {"full": True, "unsupported": False},
    ),
    "supports_wildcard_preconditions": (
        "save-load.mutable.if-match-wildcard",
        {"unsupported": False, "broken": False},
    ),
    "overwrite_requires_if_match": (
        "save-load.mutable.if-match-optional",
        {"unsupported": True, "full": False},
    ),
    "sync_tokens": (
        "sync-token",
        {"full": "reliable", "fragile": "fragile", "ungraceful": "none", "unsupported": "none"},
    ),
    "detects_invalid_sync_token": (
        "sync-token.invalid-token",
        {"broken": False, "full": True, "quirk": True, "ungraceful": True},
    ),
    "requires_dtend": (
        "save-load.event.no-dtend",
        {"ungraceful": True, "unsupported": True, "full": False},
    ),
    "allows_duplicate_uids": (
        "save.no-uid-conflict",
        {"unsupported": True, "full": False, "ungraceful": False},
    ),
}


# Only what a hints profile states outright is compared; defaults are not observations.
DECLARED = [
    (profile, flag, level)
    for profile in HINTED
    for flag, (feature, expected_by_level) in sorted(HINT_RULES.items())
    if (level := _declared(profile, feature)) in expected_by_level
]


def test_hints_declare_something_for_every_hinted_profile() -> None:
    assert {profile.key for profile, _, _ in DECLARED} == {p.key for p in HINTED}


@pytest.mark.parametrize(
    ("profile", "flag", "level"), DECLARED, ids=[f"{p.key}-{f}" for p, f, _ in DECLARED]
)
def test_flag_agrees_with_what_the_hints_declare(
    profile: ProviderProfile, flag: str, level: str
) -> None:
    feature, expected_by_level = HINT_RULES[flag]
    assert getattr(profile, flag) == expected_by_level[level], (profile.key, feature, level)
    assert flag not in profile.unverified, f"{flag} is observed by caldav, not an assumption"


@pytest.mark.parametrize("profile", HINTED, ids=lambda p: p.key)
def test_if_none_match_ignored_means_no_wildcard_preconditions(profile: ProviderProfile) -> None:
    if _declared(profile, "save.if-none-match") == "unsupported":
        assert not profile.supports_wildcard_preconditions


def test_posteo_well_known_matches_hints() -> None:
    assert _declared(get_profile("posteo"), "well-known") == "unsupported"
    assert get_profile("posteo").well_known is False


# --- the facts the sync code relies on -----------------------------------------


def test_known_provider_facts() -> None:
    icloud, google, zimbra = get_profile("icloud"), get_profile("google"), get_profile("zimbra")
    assert icloud.requires_dtend and icloud.partition_hosts
    assert not zimbra.supports_wildcard_preconditions and zimbra.sync_tokens == "fragile"
    assert google.auth == "oauth2_bearer" and not google.supports_if_none_match
    assert get_profile("mailbox_org").overwrite_requires_if_match
    for key in ("baikal", "davical", "posteo", "synology"):
        assert get_profile(key).allows_duplicate_uids, key
    assert get_profile("nextcloud").uid_reuse_after_delete_blocked
    for key in ("davical", "sogo", "synology", "mailbox_org"):
        assert not get_profile(key).detects_invalid_sync_token, key
    for key in ("radicale", "xandikos"):
        assert get_profile(key).detects_invalid_sync_token, key
    assert get_profile("daylite").merge_categories_note
    assert get_profile("all_inkl").url_fixups
    assert get_profile("posteo").sync_tokens == "none"


def test_generic_profile_is_cautious_everywhere() -> None:
    assert GENERIC.unverified == frozenset(CAPABILITY_FLAGS)
    assert not GENERIC.supports_if_none_match and not GENERIC.supports_wildcard_preconditions
    assert GENERIC.overwrite_requires_if_match and GENERIC.requires_dtend
    assert GENERIC.allows_duplicate_uids and not GENERIC.detects_invalid_sync_token
    assert GENERIC.sync_tokens == "fragile"


def test_partition_hosts() -> None:
    icloud = get_profile("icloud")
    assert is_partition_host(icloud, "p42-caldav.icloud.com")
    assert is_partition_host(icloud, "P07-CALDAV.icloud.com.")
    assert not is_partition_host(icloud, "caldav.icloud.com")
    assert not is_partition_host(icloud, "p42-caldav.icloud.com.evil.example")
    assert not is_partition_host(get_profile("google"), "p42-caldav.icloud.com")


# --- lookups ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("https://caldav.icloud.com/", "icloud"),
        ("https://p42-caldav.icloud.com/123456789/calendars/home/", "icloud"),
        ("https://apidata.googleusercontent.com/caldav/v2/a@gmail.com/events", "google"),
        ("https://calendar.google.com/calendar/ical/a%40gmail.com/private-x/basic.ics", "google"),
        ("https://mail.example.com/dav/alice@example.com/Calendar/", "zimbra"),
        ("https://cloud.example.com/remote.php/dav/calendars/alice/personal/", "nextcloud"),
        ("cloud.example.com/nc/remote.php/dav/", "nextcloud"),
        ("https://caldav.fastmail.com/dav/calendars/user/a@fastmail.com/", "fastmail"),
        ("https://dav.mailbox.org/caldav/Y2FsOi8vMC8zMQ/", "mailbox_org"),
        ("https://posteo.de:8443/calendars/alice/default/", "posteo"),
        ("https://acme.daylite.app/", "daylite"),
        ("https://w0123456.kasserver.com/calendars/alice/1/", "all_inkl"),
        ("http://localhost:5232/alice/calendar/", "radicale"),
        ("https://dav.example.com/dav.php/calendars/alice/default/", "baikal"),
        ("https://dav.example.com/cal.php/", "baikal"),
        ("https://cal.example.com/caldav.php/alice/calendar/", "davical"),
        ("https://nas.synology.me:5001/caldav/alice/home/", "synology"),
        ("https://nas.example.com:20003/caldav/alice/home/", "synology"),
        ("https://mail.example.com/SOGo/dav/alice/Calendar/personal/", "sogo"),
        ("https://dav.example.com/alice/calendars/calendar/", "generic"),
        ("https://noticloud.com/", "generic"),
        ("https://icloud.com.evil.example/", "generic"),
        ("not a url at all", "generic"),
        ("https://x.example:99999/", "generic"),
    ],
)
def test_profile_for_url(url: str, key: str) -> None:
    assert profile_for_url(url).key == key


@pytest.mark.parametrize(
    ("email", "key"),
    [
        ("alice@icloud.com", "icloud"),
        ("alice@me.com", "icloud"),
        ("Alice@MAC.com", "icloud"),
        ("alice@gmail.com", "google"),
        ("alice@googlemail.com", "google"),
        ("alice@fastmail.com", "fastmail"),
        ("alice@posteo.de", "posteo"),
        ("alice@mailbox.org", "mailbox_org"),
        ("alice@example.com", None),
        ("alice@sub.gmail.com", None),
        ("no-at-sign", None),
        ("alice@", None),
    ],
)
def test_profile_for_email(email: str, key: str | None) -> None:
    found = profile_for_email(email)
    assert (found.key if found else None) == key


def test_get_profile_returns_the_profile() -> None:
    assert get_profile("icloud") is PROFILES_BY_KEY["icloud"]


def test_get_profile_unknown_key_lists_the_known_keys() -> None:
    with pytest.raises(KeyError) as caught:
        get_profile("outlook")
    error = caught.value
    assert isinstance(error, UnknownProviderError)
    assert str(error).startswith("unknown provider 'outlook'; known providers: icloud, google")
    assert all(key in str(error) for key in EXPECTED_KEYS)
    assert error.known == tuple(PROFILES_BY_KEY)


@pytest.mark.parametrize(
    ("key", "base", "email", "expected"),
    [
        ("icloud", None, None, "https://caldav.icloud.com/"),
        (
            "google",
            None,
            "alice@gmail.com",
            "https://apidata.googleusercontent.com/caldav/v2/alice@gmail.com/events",
        ),
        ("google", None, None, None),
        (
            "nextcloud",
            "https://cloud.example.com/",
            None,
            "https://cloud.example.com/remote.php/dav/",
        ),
        ("nextcloud", None, None, None),
        ("zimbra", "https://mail.example.com:8443", None, "https://mail.example.com:8443/dav/"),
        ("posteo", None, None, "https://posteo.de:8443/"),
        ("generic", "https://x.example", None, None),
    ],
)
def test_render_base_url(
    key: str, base: str | None, email: str | None, expected: str | None
) -> None:
    assert render_base_url(get_profile(key), base=base, email=email) == expected


def test_needs_user_host() -> None:
    assert get_profile("nextcloud").needs_user_host
    assert not get_profile("icloud").needs_user_host
    assert not GENERIC.needs_user_host


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"auth": "ntlm"}, "unknown auth style"),
        ({"sync_tokens": "sometimes"}, "unknown sync_tokens value"),
        ({"unverified": frozenset({"colour"})}, "unknown flags"),
        ({"host_patterns": ("(",)}, "does not compile"),
    ],
)
def test_profile_validation(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(GENERIC, **change)
