"""Turn what a user typed as "calendar address" into URLs worth trying.

Everything here is pure: no DNS, no HTTP.  :func:`normalise` validates the
input, takes out credentials embedded in it and returns the candidate URLs in
the order discovery should try them, each with a one-sentence reason that can
be shown to the user.  Run :func:`caljournal.adapters.netguard.check_host` on
a candidate's host before connecting to it.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

from publicsuffixlist import PublicSuffixList

from caljournal.adapters.netguard import is_ip_literal
from caljournal.adapters.providers import (
    GENERIC,
    ProviderProfile,
    profile_for_email,
    profile_for_url,
    render_base_url,
)

MAX_URL_LENGTH = 2048

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_EMAIL = re.compile(r"[^@\s/:?#\[\]]+@(?P<domain>[^@\s/:?#\[\]]+\.[^@\s/:?#\[\]]+)")
_HOST_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")
_NUMERIC_SEGMENT = re.compile(r"\d{1,4}")
_SUBSCRIPTION_SCHEMES = frozenset({"webcal", "webcals"})


class CalendarURLError(ValueError):
    """The text cannot be used as a calendar address; the message says why."""


@dataclass(frozen=True)
class Candidate:
    """One URL to try, and why it is on the list.

    ``insecure`` is set when the URL uses plain http, so the password would
    travel unencrypted.
    """

    url: str
    reason: str
    insecure: bool = False


@dataclass(frozen=True)
class Credentials:
    """A user name and password that were embedded in the typed URL.

    The password is left out of ``repr`` so it cannot end up in a log line.
    """

    username: str
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class NormalisedInput:
    """The result of :func:`normalise`."""

    candidates: tuple[Candidate, ...]
    credentials: Credentials | None
    profile: ProviderProfile


def candidate_urls(raw: str, profile: ProviderProfile | None = None) -> list[Candidate]:
    """Return the URLs worth trying for ``raw``, best first.

    Credentials embedded in ``raw`` are dropped; use :func:`normalise` to get
    them back.

    :raises CalendarURLError: when ``raw`` is not a usable calendar address.
    """
    return list(normalise(raw, profile).candidates)


def normalise(raw: str, profile: ProviderProfile | None = None) -> NormalisedInput:
    """Validate ``raw`` and return its candidate URLs and embedded credentials.

    ``raw`` may be a calendar URL, a server URL, a bare host name or an e-mail
    address.  ``profile`` is detected from the input when not given.

    :raises CalendarURLError: when ``raw`` is empty, contains spaces or control
        characters, is too long, uses a scheme other than http or https, or
        has no valid host or port.
    """
    text = _clean(raw)
    email = _EMAIL.fullmatch(text)
    if email:
        return _from_email(text, email.group("domain"), profile)
    scheme_added = False
    scheme_match = _SCHEME.match(text)
    if scheme_match and (
        text[scheme_match.end() :].startswith("//") or not text[scheme_match.end() :][:1].isdigit()
    ):
        _check_scheme(scheme_match.group(1).lower())
    else:
        text, scheme_added = "https://" + text, True
    parts, credentials = _split(text)
    url = urlunsplit((parts.scheme, parts.netloc, parts.path or "/", parts.query, ""))
    profile = profile or profile_for_url(url)
    return NormalisedInput(
        candidates=tuple(_dedupe(_candidates(url, parts, profile, scheme_added))),
        credentials=credentials,
        profile=profile,
    )


def split_secret_query(raw: str) -> tuple[str, str | None]:
    """Return ``raw`` without its query string, and the query string.

    The rule for secrets in a link URL: the *whole* query string is a secret.
    CalDAV needs no query parameters, so any a user pastes are there to
    authenticate (``?token=``, ``?key=``, ``?auth=``, signed-URL parameters,
    or names nobody can list in advance); judging them by name would miss some.
    The query is sealed with the password and added back only to requests sent
    to the origin it came with; the fragment is dropped.
    """
    text = raw.strip().split("#", 1)[0]
    base, mark, query = text.partition("?")
    return (base, query) if mark and query else (base, None)


@functools.cache
def _suffix_list() -> PublicSuffixList:
    return PublicSuffixList()


def same_site(a: str, b: str) -> bool:
    """Tell whether URLs ``a`` and ``b`` are on one site.

    One site is one registrable domain by the Public Suffix List
    (``p12-caldav.icloud.com`` and ``caldav.icloud.com`` are; ``a.github.io``
    and ``b.github.io`` are not); an IP address or a name without a
    registrable domain (``localhost``) is only the same site as itself.
    """
    ha = (urlsplit(a).hostname or "").rstrip(".").lower()
    hb = (urlsplit(b).hostname or "").rstrip(".").lower()
    if not ha or not hb:
        return False
    if ha == hb:
        return True
    if is_ip_literal(ha) or is_ip_literal(hb):
        return False
    site = _suffix_list().privatesuffix(ha)
    return site is not None and site == _suffix_list().privatesuffix(hb)


def redact_url(url: str) -> str:
    """Return ``url`` fit for a log line: user info and query values hidden.

    Never raises; text that does not parse as a URL has anything that looks
    like user info hidden.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port
    except ValueError:
        return re.sub(r"//[^/?#]*@", "//***@", url)
    if host is None:
        return re.sub(r"//[^/?#]*@", "//***@", url)
    netloc = _netloc(host, port)
    if "@" in parts.netloc:
        netloc = "***@" + netloc
    query = "***" if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _clean(raw: str) -> str:
    """Return ``raw`` without surrounding whitespace, or refuse it.

    :raises CalendarURLError: when it is empty, has inner whitespace or
        control characters, or is too long.
    """
    text = raw.strip()
    if not text:
        raise CalendarURLError("The calendar address is empty.")
    if any(ch.isspace() for ch in text):
        raise CalendarURLError(
            "The calendar address contains a space; paste the address without spaces."
        )
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise CalendarURLError("The calendar address contains a control character.")
    if len(text) > MAX_URL_LENGTH:
        raise CalendarURLError(f"The calendar address is longer than {MAX_URL_LENGTH} characters.")
    return text


def _check_scheme(scheme: str) -> None:
    """Refuse every scheme but http and https.

    :raises CalendarURLError: naming the refused scheme.
    """
    if scheme in ("http", "https"):
        return
    if scheme in _SUBSCRIPTION_SCHEMES:
        raise CalendarURLError(
            f"A {scheme}: address is a read-only subscription; "
            "give the CalDAV address of the calendar instead."
        )
    raise CalendarURLError(
        f"Only http and https calendar addresses are supported, not {scheme}: addresses."
    )


def _split(text: str) -> tuple[SplitResult, Credentials | None]:
    """Parse ``text``, validate its host and port, and take out the user info.

    :raises CalendarURLError: when the host or port is missing or invalid.
    """
    try:
        parts = urlsplit(text)
        host, username, password = parts.hostname, parts.username, parts.password
    except ValueError:
        raise CalendarURLError("The host in the calendar address is not valid.") from None
    if not host:
        raise CalendarURLError("The calendar address has no host name.")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise CalendarURLError("The port in the calendar address must be a number from 1 to 65535.")
    host = _ascii_host(host)
    credentials = None
    if username or password:
        credentials = Credentials(
            unquote(username or ""), None if password is None else unquote(password)
        )
    netloc = _netloc(host, port)
    return parts._replace(scheme=parts.scheme.lower(), netloc=netloc), credentials


def _ascii_host(host: str) -> str:
    """Return ``host`` in lower-case ASCII (IDNA for international names).

    :raises CalendarURLError: when it is not a valid host name or IP literal.
    """
    if ":" in host:  # an IPv6 literal; urlsplit has checked the brackets
        return host
    try:
        ascii_host = host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise CalendarURLError(f"The host name {host!r} is not valid.") from None
    labels = ascii_host.rstrip(".").split(".")
    if not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise CalendarURLError(f"The host name {host!r} is not valid.")
    return ascii_host


def _netloc(host: str, port: int | None) -> str:
    """Return ``host[:port]``, with brackets around an IPv6 literal."""
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"


def _from_email(text: str, domain: str, profile: ProviderProfile | None) -> NormalisedInput:
    """Return the candidates for an e-mail address.

    :raises CalendarURLError: when the domain is not a valid host name.
    """
    domain = _ascii_host(domain)
    profile = profile or profile_for_email(text) or profile_for_url(domain)
    origin = f"https://{domain}"
    found: list[Candidate] = []
    base = render_base_url(profile, base=origin, email=text)
    if base and profile is not GENERIC:
        found.append(
            Candidate(
                base,
                (
                    f"used the usual {profile.display_name} CalDAV path on the e-mail domain"
                    if profile.needs_user_host
                    else f"used {profile.display_name}'s CalDAV address for this e-mail address"
                ),
            )
        )
    if profile.well_known:
        found.append(
            Candidate(
                f"{origin}/.well-known/caldav",
                "asked the e-mail domain's /.well-known/caldav discovery address",
            )
        )
    return NormalisedInput(tuple(_dedupe(found)), None, profile)


def _candidates(
    url: str, parts: SplitResult, profile: ProviderProfile, scheme_added: bool
) -> list[Candidate]:
    """Return the candidates for a parsed URL, best first."""
    insecure = parts.scheme == "http"
    origin = f"{parts.scheme}://{parts.netloc}"
    found: list[Candidate] = []
    keep_original = True
    for fixup in profile.url_fixups:
        fixed = fixup.apply(url)
        if fixed is not None and fixed != url:
            found.append(Candidate(fixed, fixup.reason, fixed.startswith("http:")))
            keep_original = keep_original and fixup.keep_original
    segments = [s for s in parts.path.split("/") if s]
    is_root = not segments
    if keep_original and not is_root:
        found.extend(_from_path(url, origin, segments, insecure, scheme_added))
    base = render_base_url(profile, base=origin)
    if base:
        reason = (
            f"used the usual {profile.display_name} CalDAV path on this host"
            if profile.needs_user_host
            else f"used {profile.display_name}'s CalDAV address"
        )
        found.append(Candidate(base, reason, base.startswith("http:")))
    if profile.well_known:
        found.append(
            Candidate(
                f"{origin}/.well-known/caldav",
                "asked the host's /.well-known/caldav discovery address",
                insecure,
            )
        )
    if is_root and (profile is GENERIC or profile.needs_user_host):
        found.append(
            Candidate(
                f"{origin}/",
                "tried the site root, where some servers answer CalDAV directly",
                insecure,
            )
        )
    return found


def _from_path(
    url: str, origin: str, segments: list[str], insecure: bool, scheme_added: bool
) -> list[Candidate]:
    """Return the candidates a URL with a path gives by itself."""
    last = segments[-1]
    parent = origin + "/" + "".join(s + "/" for s in segments[:-1])
    if last.lower().endswith(".ics"):
        return [
            Candidate(
                parent, f"dropped the object name {last!r} to get its calendar collection", insecure
            )
        ]
    if scheme_added:
        reason = "added the missing https:// and kept the rest of the address as given"
    elif insecure:
        reason = "kept the calendar URL as given, over plain http without encryption"
    else:
        reason = "kept the calendar URL as given"
    found = [Candidate(url, reason, insecure)]
    if _NUMERIC_SEGMENT.fullmatch(last) and len(segments) > 1:
        found.append(
            Candidate(
                parent,
                f"dropped the trailing '/{last}/' segment, which some "
                "hosting panels add to the calendar address",
                insecure,
            )
        )
    return found


def _dedupe(candidates: list[Candidate]) -> list[Candidate]:
    """Return ``candidates`` without repeated URLs, keeping the first of each."""
    seen: set[str] = set()
    unique: list[Candidate] = []
    for candidate in candidates:
        if candidate.url not in seen:
            seen.add(candidate.url)
            unique.append(candidate)
    return unique
