"""What each CalDAV provider needs, kept as data.

Every provider the sync engine knows is one :class:`ProviderProfile` in
:data:`PROFILES`.  The sync code reads capability flags instead of testing
provider names, so a new provider or a corrected fact is one table row.
``caldav_hints`` names the server profile in ``caldav.compatibility_hints``
that can be passed to caldav as ``features=<name>``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Literal, get_args
from urllib.parse import quote, urlsplit

from caljournal.adapters.fetch_mode import FetchMode

AuthStyle = Literal["basic", "oauth2_bearer", "digest"]
SyncTokens = Literal["reliable", "fragile", "none"]

#: The capability flags; a name in ``ProviderProfile.unverified`` must be one of these.
CAPABILITY_FLAGS: tuple[str, ...] = (
    "supports_if_none_match",
    "supports_wildcard_preconditions",
    "overwrite_requires_if_match",
    "sync_tokens",
    "detects_invalid_sync_token",
    "requires_dtend",
    "allows_duplicate_uids",
    "uid_reuse_after_delete_blocked",
)
_ALL_UNVERIFIED = frozenset(CAPABILITY_FLAGS)


class UnknownProviderError(KeyError):
    """No provider profile has the requested key."""

    def __init__(self, key: str, known: tuple[str, ...]) -> None:
        super().__init__(key)
        self.key = key
        self.known = known
        self.message = f"unknown provider {key!r}; known providers: {', '.join(known)}"

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class UrlFixup:
    """Rewrite a user-supplied URL that is known to fail into one that works.

    ``pattern`` must match the whole normalised URL; ``replacement`` uses
    ``re`` group syntax (``\\g<name>``).  Unless ``keep_original`` is set, the
    URL as given is not tried afterwards.
    """

    pattern: str
    replacement: str
    reason: str
    keep_original: bool = False

    def apply(self, url: str) -> str | None:
        """Return the rewritten URL, or None when the pattern does not match."""
        match = re.fullmatch(self.pattern, url)
        return match.expand(self.replacement) if match else None


@dataclass(frozen=True)
class ProviderProfile:
    """One CalDAV provider: how to recognise it, reach it and what it can do.

    ``host_patterns`` must match the whole lower-case host name and
    ``path_markers`` are searched in the URL path (both regular expressions).
    ``base_url`` is a template: ``{base}`` is the scheme and authority of the
    user's host, ``{email}`` the account's e-mail address.

    Capability flags (defaults are the cautious choice; flags that are a
    cautious assumption rather than an observation are named in ``unverified``):

    * ``supports_if_none_match``: ``If-None-Match: *`` stops a create from overwriting.
    * ``supports_wildcard_preconditions``: ``If-Match: *`` and ``If-None-Match: *``
      both hold as RFC 9110 says.
    * ``overwrite_requires_if_match``: an overwrite without ``If-Match`` is refused.
    * ``sync_tokens``: "reliable" (use sync-collection), "fragile" (use it, confirm
      with full listings) or "none" (compare etags).
    * ``detects_invalid_sync_token``: an unknown token is refused, not answered.
    * ``requires_dtend``: an event needs DTEND or DURATION.
    * ``allows_duplicate_uids``: a second object with an existing UID is stored.
    * ``uid_reuse_after_delete_blocked``: a deleted object's UID cannot be reused.

    ``fetch_mode`` is how a calendar of this provider is first asked for its
    objects (sync-collection with the data, and the first multiget's size);
    a poll adapts it to what the server does and records it with the link, so
    a preset only spares the first poll's learning. Every profile keeps the
    default until a server's behaviour has been observed.

    :raises ValueError: when a value is out of range, an ``unverified`` name is
        not a capability flag, or a pattern does not compile.
    """

    key: str
    display_name: str
    base_url: str | None
    auth: AuthStyle = "basic"
    caldav_hints: str | None = None
    host_patterns: tuple[str, ...] = ()
    email_domains: tuple[str, ...] = ()
    path_markers: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    well_known: bool = True
    supports_if_none_match: bool = False
    supports_wildcard_preconditions: bool = False
    overwrite_requires_if_match: bool = True
    sync_tokens: SyncTokens = "fragile"
    detects_invalid_sync_token: bool = False
    fetch_mode: FetchMode = FetchMode()
    requires_dtend: bool = True
    allows_duplicate_uids: bool = True
    uid_reuse_after_delete_blocked: bool = True
    partition_hosts: str | None = None
    merge_categories_note: str | None = None
    url_fixups: tuple[UrlFixup, ...] = ()
    unverified: frozenset[str] = frozenset()
    notes: tuple[str, ...] = ()
    _hosts: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)
    _paths: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.auth not in get_args(AuthStyle):
            raise ValueError(f"{self.key}: unknown auth style {self.auth!r}")
        if self.sync_tokens not in get_args(SyncTokens):
            raise ValueError(f"{self.key}: unknown sync_tokens value {self.sync_tokens!r}")
        stray = self.unverified - _ALL_UNVERIFIED
        if stray:
            raise ValueError(f"{self.key}: unverified names unknown flags {sorted(stray)}")
        try:
            hosts = tuple(re.compile(p) for p in self.host_patterns)
            paths = tuple(re.compile(p, re.IGNORECASE) for p in self.path_markers)
            for fixup in self.url_fixups:
                re.compile(fixup.pattern)
            if self.partition_hosts is not None:
                re.compile(self.partition_hosts)
        except re.error as exc:
            raise ValueError(f"{self.key}: a pattern does not compile: {exc}") from None
        object.__setattr__(self, "_hosts", hosts)
        object.__setattr__(self, "_paths", paths)

    @property
    def needs_user_host(self) -> bool:
        """Tell whether the base URL needs the host of the user's own server."""
        return self.base_url is not None and "{base}" in self.base_url

    def matches_host(self, host: str) -> bool:
        """Tell whether ``host`` (any case, no port) belongs to this provider."""
        host = host.lower().rstrip(".")
        return any(p.fullmatch(host) for p in self._hosts)

    def matches_path(self, path: str) -> bool:
        """Tell whether ``path`` carries a marker of this provider's software."""
        return any(p.search(path) for p in self._paths)


def _domain(name: str) -> str:
    """Return a host pattern for ``name`` and any of its subdomains."""
    return r"(?:[a-z0-9-]+\.)*" + re.escape(name)


_SABRE_SYNC = "SabreDAV refuses an unknown sync token with 403 valid-sync-token."

PROFILES: tuple[ProviderProfile, ...] = (
    ProviderProfile(
        key="icloud",
        display_name="iCloud",
        base_url="https://caldav.icloud.com/",
        caldav_hints="icloud",
        email_domains=("icloud.com", "me.com", "mac.com"),
        host_patterns=(_domain("icloud.com"),),
        partition_hosts=r"p\d+-caldav\.icloud\.com",
        supports_if_none_match=True,
        overwrite_requires_if_match=False,
        sync_tokens="reliable",
        unverified=frozenset(
            {
                "detects_invalid_sync_token",
                "allows_duplicate_uids",
                "uid_reuse_after_delete_blocked",
            }
        ),
        notes=(
            "Basic auth with an app-specific password.",
            "An event with neither DTEND nor DURATION is refused with 404 or 403.",
            "The calendar home lives on a partition host pNN-caldav.icloud.com, but hrefs "
            "may still come back on caldav.icloud.com.",
            "If-Match: * works backwards: 412 on an existing object, creates a missing one.",
            "The same UID in two calendars of one account is refused.",
        ),
    ),
    ProviderProfile(
        key="google",
        display_name="Google Calendar",
        auth="oauth2_bearer",
        base_url="https://apidata.googleusercontent.com/caldav/v2/{email}/events",
        host_patterns=(r"apidata\.googleusercontent\.com", r"(?:calendar|www)\.google\.com"),
        email_domains=("gmail.com", "googlemail.com"),
        well_known=False,
        sync_tokens="reliable",
        url_fixups=(
            UrlFixup(
                pattern=r"https://(?:calendar|www)\.google\.com/calendar/(?:ical|dav)/"
                r"(?P<cal>[^/?#]+)/.*",
                replacement=r"https://apidata.googleusercontent.com/caldav/v2/\g<cal>/events",
                reason="rewrote the Google Calendar address to the CalDAV v2 events collection "
                "of the same calendar",
            ),
        ),
        unverified=frozenset(
            {
                "supports_wildcard_preconditions",
                "overwrite_requires_if_match",
                "detects_invalid_sync_token",
                "requires_dtend",
                "allows_duplicate_uids",
                "uid_reuse_after_delete_blocked",
            }
        ),
        notes=(
            "OAuth2 bearer token (scope https://www.googleapis.com/auth/calendar).",
            "No If-* header except If-Match; no MKCALENDAR, VTODO or VJOURNAL.",
            "The primary calendar's id is the account's e-mail address; the old endpoint "
            "https://www.google.com/calendar/dav is deprecated.",
        ),
    ),
    ProviderProfile(
        key="zimbra",
        display_name="Zimbra",
        base_url="{base}/dav/",
        caldav_hints="zimbra",
        path_markers=(r"^/(?:service/)?dav/[^/]+@[^/]+",),
        overwrite_requires_if_match=False,
        sync_tokens="fragile",
        requires_dtend=False,
        allows_duplicate_uids=False,
        unverified=frozenset({"detects_invalid_sync_token", "uid_reuse_after_delete_blocked"}),
        notes=(
            "If-None-Match: * and If-Match: * are compared as literal etags.",
            "The same UID in two calendars is one event: saving it to the second moves it.",
            "A display name set at creation moves the calendar to a name-derived URL.",
            "A cancelled occurrence is turned into an EXDATE.",
        ),
    ),
    ProviderProfile(
        key="nextcloud",
        display_name="Nextcloud",
        base_url="{base}/remote.php/dav/",
        caldav_hints="nextcloud",
        path_markers=(r"/remote\.php/(?:dav|caldav)(?:/|$)", r"/index\.php/apps/calendar(?:/|$)"),
        supports_if_none_match=True,
        supports_wildcard_preconditions=True,
        overwrite_requires_if_match=False,
        sync_tokens="reliable",
        detects_invalid_sync_token=True,
        requires_dtend=False,
        allows_duplicate_uids=False,
        uid_reuse_after_delete_blocked=True,
        url_fixups=(
            UrlFixup(
                pattern=r"(?P<origin>https?://[^/?#]+)(?P<prefix>/[^?#]*?)??"
                r"(?:/index\.php)?/apps/calendar(?:[/?].*)?",
                replacement=r"\g<origin>\g<prefix>/remote.php/dav/",
                reason="replaced the Nextcloud Calendar web page with the server's CalDAV address",
            ),
        ),
        unverified=frozenset({"detects_invalid_sync_token"}),
        notes=(
            "The trash bin keeps deleted objects, so re-using a UID after a delete can "
            "fail until it is emptied (nextcloud/server#30096).",
            "A second object with an existing UID is refused.",
            "DAV:limit cuts sync-collection without a 507 and loses changes.",
            _SABRE_SYNC,
        ),
    ),
    ProviderProfile(
        key="fastmail",
        display_name="Fastmail",
        base_url="https://caldav.fastmail.com/dav/",
        host_patterns=(_domain("fastmail.com"), _domain("messagingengine.com")),
        email_domains=("fastmail.com", "fastmail.fm"),
        unverified=_ALL_UNVERIFIED,
        notes=(
            "Basic auth with an app password.",
            "Runs Cyrus; caldav's old flags for Fastmail recorded that the same UID in "
            "another calendar of the account breaks, and no VTODO.",
        ),
    ),
    ProviderProfile(
        key="mailbox_org",
        display_name="mailbox.org",
        base_url="https://dav.mailbox.org/caldav/",
        caldav_hints="ox",
        host_patterns=(_domain("mailbox.org"),),
        email_domains=("mailbox.org",),
        supports_if_none_match=True,
        supports_wildcard_preconditions=True,
        overwrite_requires_if_match=True,
        sync_tokens="reliable",
        detects_invalid_sync_token=False,
        requires_dtend=False,
        allows_duplicate_uids=False,
        unverified=frozenset({"uid_reuse_after_delete_blocked"}),
        notes=(
            "OX App Suite: an overwrite without If-Match is refused with 409.",
            "An unknown sync token gets 207 without an error.",
            "Every calendar also lives at an opaque base64 cal://0/NNN URL.",
            "A series with exceptions cannot be rescheduled (409).",
        ),
    ),
    ProviderProfile(
        key="posteo",
        display_name="Posteo",
        base_url="https://posteo.de:8443/",
        caldav_hints="posteo",
        host_patterns=(_domain("posteo.de"),),
        email_domains=("posteo.de",),
        well_known=False,
        supports_if_none_match=True,
        supports_wildcard_preconditions=False,
        overwrite_requires_if_match=False,
        sync_tokens="none",
        requires_dtend=False,
        allows_duplicate_uids=True,
        unverified=frozenset({"uid_reuse_after_delete_blocked"}),
        notes=(
            "sync-collection answers with an error: poll with etags instead.",
            "If-Match: * is ignored and creates a missing object.",
            "Calendars cannot be created over CalDAV; /.well-known/caldav is not served.",
        ),
    ),
    ProviderProfile(
        key="daylite",
        display_name="Daylite",
        base_url="{base}/",
        host_patterns=(_domain("daylite.app"),),
        merge_categories_note=(
            "Daylite offers its appointments to other calendar apps only when the "
            "categories are merged into one calendar; ask the user to turn that on in Daylite."
        ),
        unverified=_ALL_UNVERIFIED,
        notes=("The CalDAV address depends on the Daylite server and must come from the user.",),
    ),
    ProviderProfile(
        key="all_inkl",
        display_name="All-Inkl",
        base_url="{base}/",
        host_patterns=(_domain("all-inkl.com"), _domain("kasserver.com")),
        url_fixups=(
            UrlFixup(
                pattern=r"(?P<keep>https?://[^?#]*/)1/?",
                replacement=r"\g<keep>",
                reason="trimmed All-Inkl's trailing '/1/' segment",
            ),
        ),
        unverified=_ALL_UNVERIFIED,
        notes=("The URL All-Inkl generates ends in /1/ and fails until that is trimmed.",),
    ),
    ProviderProfile(
        key="radicale",
        display_name="Radicale",
        base_url="{base}/",
        caldav_hints="radicale",
        ports=(5232,),
        supports_if_none_match=True,
        supports_wildcard_preconditions=False,
        overwrite_requires_if_match=False,
        sync_tokens="reliable",
        detects_invalid_sync_token=True,
        requires_dtend=False,
        allows_duplicate_uids=False,
        uid_reuse_after_delete_blocked=False,
        notes=(
            "An unknown sync token is refused with 403 valid-sync-token.",
            "If-Match: * is compared as a literal etag: an overwrite carrying it gets 412.",
            "A second object with an existing UID is refused with 409.",
        ),
    ),
    ProviderProfile(
        key="xandikos",
        display_name="Xandikos",
        base_url="{base}/",
        caldav_hints="xandikos",
        supports_if_none_match=True,
        supports_wildcard_preconditions=True,
        overwrite_requires_if_match=False,
        sync_tokens="reliable",
        detects_invalid_sync_token=True,
        requires_dtend=False,
        allows_duplicate_uids=False,
        uid_reuse_after_delete_blocked=False,
        notes=(
            "An unknown sync token is refused with 412 valid-sync-token (500 when it "
            "is not a hex SHA).",
            "DAV:limit cuts sync-collection without a 507 and loses changes.",
            "A second object with an existing UID is refused with 412.",
        ),
    ),
    ProviderProfile(
        key="baikal",
        display_name="Baïkal",
        base_url="{base}/dav.php/",
        auth="digest",
        caldav_hints="baikal",
        path_markers=(r"/(?:dav|cal)\.php(?:/|$)",),
        supports_if_none_match=True,
        supports_wildcard_preconditions=True,
        overwrite_requires_if_match=False,
        sync_tokens="reliable",
        detects_invalid_sync_token=True,
        requires_dtend=False,
        allows_duplicate_uids=True,
        uid_reuse_after_delete_blocked=False,
        unverified=frozenset({"detects_invalid_sync_token"}),
        notes=(
            "SabreDAV: a second object with an existing UID is stored at its own href.",
            "Digest auth is Baïkal's default; the admin may have switched it to Basic.",
            _SABRE_SYNC,
        ),
    ),
    ProviderProfile(
        key="davical",
        display_name="DAViCal",
        base_url="{base}/caldav.php/",
        caldav_hints="davical",
        path_markers=(r"/caldav\.php(?:/|$)",),
        supports_if_none_match=True,
        supports_wildcard_preconditions=True,
        overwrite_requires_if_match=False,
        sync_tokens="fragile",
        detects_invalid_sync_token=False,
        requires_dtend=False,
        allows_duplicate_uids=True,
        uid_reuse_after_delete_blocked=False,
        unverified=frozenset({"uid_reuse_after_delete_blocked"}),
        notes=(
            "An unknown sync token gets 207 without an error.",
            "A second object with an existing UID is stored at its own href.",
            "HTTP/2 multiplexing is not supported.",
        ),
    ),
    ProviderProfile(
        key="synology",
        display_name="Synology Calendar",
        base_url="{base}/caldav/",
        caldav_hints="synology",
        host_patterns=(_domain("synology.me"), _domain("myds.me"), _domain("diskstation.me")),
        ports=(20002, 20003),
        supports_if_none_match=True,
        supports_wildcard_preconditions=True,
        overwrite_requires_if_match=False,
        sync_tokens="fragile",
        detects_invalid_sync_token=False,
        requires_dtend=False,
        allows_duplicate_uids=True,
        uid_reuse_after_delete_blocked=False,
        unverified=frozenset({"uid_reuse_after_delete_blocked"}),
        notes=(
            "A modified DAViCal: the same limits as DAViCal apply.",
            "Calendars are managed in DSM; a CalDAV DELETE of a calendar is refused.",
        ),
    ),
    ProviderProfile(
        key="sogo",
        display_name="SOGo",
        base_url="{base}/SOGo/dav/",
        caldav_hints="sogo",
        path_markers=(r"^/SOGo/dav(?:/|$)",),
        supports_if_none_match=False,
        supports_wildcard_preconditions=False,
        overwrite_requires_if_match=False,
        sync_tokens="fragile",
        detects_invalid_sync_token=False,
        requires_dtend=False,
        allows_duplicate_uids=False,
        unverified=frozenset({"uid_reuse_after_delete_blocked"}),
        notes=(
            "If-None-Match: * and If-Match: * are both ignored.",
            "An unknown sync token gets 207 without an error.",
            "A second object with an existing UID is refused with a bare 409.",
        ),
    ),
    ProviderProfile(
        key="generic",
        display_name="CalDAV server",
        base_url=None,
        unverified=_ALL_UNVERIFIED,
        notes=("Unknown server: every flag is the cautious choice.",),
    ),
)

PROFILES_BY_KEY: Mapping[str, ProviderProfile] = MappingProxyType({p.key: p for p in PROFILES})
GENERIC: ProviderProfile = PROFILES_BY_KEY["generic"]

if len(PROFILES_BY_KEY) != len(PROFILES):
    raise RuntimeError("two provider profiles share a key")
if not set(CAPABILITY_FLAGS) <= {f.name for f in fields(ProviderProfile)}:
    raise RuntimeError("CAPABILITY_FLAGS names a field ProviderProfile does not have")


def get_profile(key: str) -> ProviderProfile:
    """Return the profile with ``key``.

    :raises UnknownProviderError: when no profile has that key; the message
        lists the known keys.
    """
    try:
        return PROFILES_BY_KEY[key]
    except KeyError:
        raise UnknownProviderError(key, tuple(PROFILES_BY_KEY)) from None


def profile_for_url(url: str) -> ProviderProfile:
    """Return the profile whose host, path marker or port matches ``url``.

    Host names are tried first, then path markers, then ports; the generic
    profile is returned when nothing matches.  A URL without a scheme is read
    as if it had one.
    """
    try:
        parts = urlsplit(url if "://" in url else "//" + url)
        host, path = parts.hostname or "", parts.path
        port = parts.port
    except ValueError:
        return GENERIC
    found = next((p for p in PROFILES if host and p.matches_host(host)), None)
    found = found or next((p for p in PROFILES if p.matches_path(path)), None)
    found = found or next((p for p in PROFILES if port in p.ports), None)
    return found or GENERIC


def profile_for_email(email: str) -> ProviderProfile | None:
    """Return the profile that hosts mail of ``email``'s domain, or None."""
    _, at, domain = email.strip().rpartition("@")
    if not at or not domain:
        return None
    domain = domain.lower().rstrip(".")
    return next((p for p in PROFILES if domain in p.email_domains), None)


def render_base_url(
    profile: ProviderProfile, *, base: str | None = None, email: str | None = None
) -> str | None:
    """Fill in the profile's base URL template.

    ``base`` is the scheme and authority of the user's server
    (``https://host:port``), ``email`` the account's address.  Return None
    when the profile has no base URL or a needed value is missing.
    """
    template = profile.base_url
    if template is None:
        return None
    if ("{base}" in template and not base) or ("{email}" in template and not email):
        return None
    return template.format(base=(base or "").rstrip("/"), email=quote(email or "", safe="@"))


def is_partition_host(profile: ProviderProfile, host: str) -> bool:
    """Tell whether ``host`` is one of the profile's per-account partition hosts."""
    if profile.partition_hosts is None:
        return False
    return re.fullmatch(profile.partition_hosts, host.lower().rstrip(".")) is not None
