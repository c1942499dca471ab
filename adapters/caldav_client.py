"""The connection to one CalDAV server: the caldav library's client, guarded.

Everything that talks to a calendar server goes through :func:`open_client`,
which adds what a multi-tenant service needs on top of the library:

* every connection goes to an address checked against loopback/link-local/
  private addresses in the same DNS lookup (``adapters.transport``);
* every response body is read under a size cap and every request ends by a
  deadline (``TransferLimits``), whatever the server sends;
* a redirect to another host is refused, never followed silently;
* the library's own rate-limit sleeping is off, so callers decide (tenacity);
* every failure becomes one :class:`CalDAVError` with a one-sentence message
  that never contains credentials.
"""

from __future__ import annotations

import contextlib
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any, NoReturn
from urllib.parse import urljoin, urlsplit

from caldav.davclient import DAVClient
from caldav.lib import error as dav_error
from caldav.requests import HTTPBearerAuth
from niquests import exceptions as http_errors
from niquests.packages.urllib3.exceptions import NameResolutionError, ProtocolError

from caljournal.adapters.calendar_url import redact_url
from caljournal.adapters.secrets import Credentials
from caljournal.adapters.transport import (
    OBJECT,
    BodyTooLargeError,
    DeadlinePassedError,
    GuardedSession,
    RefusedAddressError,
    TransferLimits,
)

USER_AGENT = "caljournal/0.1"


class CalDAVError(Exception):
    """A calendar server call failed; ``message`` is one sentence for the user.

    ``transient`` says whether retrying later may help; ``retry_after`` is the
    server's own advice in seconds, when it gave one.
    """

    transient = False

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retry_after = retry_after


class AuthenticationFailedError(CalDAVError):
    """401: wrong username, password or token."""


class AccessDeniedError(CalDAVError):
    """403: authenticated, but not allowed (e.g. a read-only calendar)."""


class ObjectNotFoundError(CalDAVError):
    """404/410: no such calendar or object."""


class PreconditionFailedError(CalDAVError):
    """412: the object changed (If-Match) or exists (If-None-Match)."""


class NotCalDAVError(CalDAVError):
    """The server answers, but not as a CalDAV server."""


class TLSFailedError(CalDAVError):
    """The server's certificate could not be verified."""


class RedirectRefusedError(CalDAVError):
    """The server redirected to another host."""


class AddressRefusedError(CalDAVError):
    """The host resolves to an address caljournal may not contact."""


class UnreachableError(CalDAVError):
    """No connection (refused, reset, DNS failure)."""

    transient = True


class TimedOutError(CalDAVError):
    """The server did not answer in time."""

    transient = True


class DeadlineExceededError(TimedOutError):
    """The server was still sending when the request's deadline passed."""


class ResponseTooLargeError(CalDAVError):
    """The server's answer exceeded the size cap for its kind of request."""


class RateLimitedError(CalDAVError):
    """429, or 503 with Retry-After."""

    transient = True


class ServerFailedError(CalDAVError):
    """5xx: the server failed."""

    transient = True


class RequestRejectedError(CalDAVError):
    """Another 4xx: the server refused this one request."""


@dataclass(frozen=True)
class ServerAccess:
    """Everything needed to reach a server; secrets stay out of ``repr``.

    ``kind`` is the default kind of request of clients opened with it (it
    picks the size cap and deadline, see ``TransferLimits``); ``deadline``
    (``time.monotonic()``) ends every request of an operation at once.
    """

    url: str
    credentials: Credentials = field(default_factory=Credentials)
    auth: str = "basic"
    verify_tls: bool = True
    allow_private: bool = False
    timeout: float = 15.0
    caldav_hints: str | None = None
    limits: TransferLimits = field(default_factory=TransferLimits)
    kind: str = OBJECT
    deadline: float | None = None

    def at(self, url: str) -> ServerAccess:
        """Return the same access for another URL."""
        return replace(self, url=url)

    def within(self, seconds: float | None = None, kind: str | None = None) -> ServerAccess:
        """Return the same access for one operation that must end in ``seconds``.

        ``None`` takes ``limits.operation_seconds``; an earlier deadline stays.
        """
        ends = time.monotonic() + (self.limits.operation_seconds if seconds is None else seconds)
        if self.deadline is not None:
            ends = min(ends, self.deadline)
        return replace(self, deadline=ends, kind=kind or self.kind)


def _guard_hooks(access: ServerAccess) -> dict[str, Any]:
    def before(request: Any, **_: Any) -> Any:
        # The address itself is checked where the connection is made
        # (``transport.CheckedResolver``), with the very DNS answer used.
        parts = urlsplit(str(request.url))
        if parts.scheme not in ("http", "https"):
            raise AddressRefusedError(f"refused a {parts.scheme!r} URL")
        return request

    def after(response: Any, **_: Any) -> Any:
        if getattr(response, "is_redirect", False):
            source = urlsplit(str(response.url))
            target = urlsplit(urljoin(str(response.url), response.headers.get("Location", "")))
            # Another port of the same host is followed: reverse proxies often
            # fail to rewrite their backend's port. The new address is checked
            # by ``before`` like any other.
            if target.hostname != source.hostname or (
                source.scheme == "https" and target.scheme != "https"
            ):
                response.close()
                raise RedirectRefusedError(
                    f"{source.hostname} redirected to {redact_url(target.geturl())}; "
                    "caljournal does not follow redirects to another host or to plain http - "
                    "link with that address directly if you trust it"
                )
        return response

    return {"pre_request": before, "response": after}


def _strip_auth_on_redirect(old_url: str, new_url: str) -> bool:
    """Tell whether a redirect from ``old_url`` to ``new_url`` must drop the credentials."""
    old, new = urlsplit(old_url), urlsplit(new_url)
    return old.hostname != new.hostname or (old.scheme == "https" and new.scheme != "https")


def _secret_query_hook(access: ServerAccess) -> Any:
    """Return a hook putting the link's sealed query string back into each request.

    The query is sent only to the origin it was given with, and only on
    requests that carry no query of their own.
    """
    query = access.credentials.url_query
    origin = urlsplit(access.url)[:2]

    def add_query(request: Any, **_: Any) -> Any:
        parts = urlsplit(str(request.url))
        if query and not parts.query and parts[:2] == origin:
            request.url = parts._replace(query=query).geturl()
        return request

    return add_query


def open_client(access: ServerAccess) -> DAVClient:
    """Return a caldav client for ``access`` with the guards installed.

    :raises CalDAVError: when the URL cannot be used.
    """
    kwargs: dict[str, Any] = {
        "url": access.url,
        "timeout": access.timeout,
        "ssl_verify_cert": access.verify_tls,
        "enable_rfc6764": False,
        "rate_limit_handle": False,
        "headers": {"User-Agent": USER_AGENT},
    }
    if access.caldav_hints:
        kwargs["features"] = access.caldav_hints
    creds = access.credentials
    if access.auth == "oauth2_bearer":
        kwargs["auth"] = HTTPBearerAuth(creds.bearer_token or "")
    elif access.auth != "none":
        kwargs["username"] = creds.username
        kwargs["password"] = creds.password
        if access.auth in ("basic", "digest"):
            kwargs["auth_type"] = access.auth
    with translate(f"connecting to {redact_url(access.url)}"):
        client = DAVClient(**kwargs)
    client.session.close()
    client.session = GuardedSession(
        access.limits, access.allow_private, access.kind, access.deadline
    )
    for name, hook in _guard_hooks(access).items():
        client.session.hooks[name].append(hook)
    if access.credentials.url_query:
        client.session.hooks["pre_request"].append(_secret_query_hook(access))
    # A redirect the guard lets through (same host, maybe another port) keeps
    # the credentials: behind a reverse proxy the backend's port shows through.
    client.session.should_strip_auth = _strip_auth_on_redirect  # type: ignore[method-assign]
    return client


@contextlib.contextmanager
def translate(what: str) -> Iterator[None]:
    """Turn library and network errors raised inside into :class:`CalDAVError`."""
    try:
        yield
    except CalDAVError:
        raise
    except BodyTooLargeError as exc:
        raise ResponseTooLargeError(
            f"the server sent more than {_size(exc.limit)} for one {exc.kind} answer while "
            f"{what}; caljournal stops reading there (limit CALJOURNAL_CALDAV_MAX_"
            f"{exc.kind.upper()}_BYTES)"
        ) from None
    except DeadlinePassedError as exc:
        raise DeadlineExceededError(
            f"the server did not finish answering within {exc.seconds:.0f} s while {what}; "
            "caljournal gives up on a request that slow"
        ) from None
    except RefusedAddressError as exc:
        raise AddressRefusedError(
            f"{exc.host} is refused: caljournal does not contact loopback, private or "
            "link-local addresses unless the operator allows them (link-local never)"
        ) from None
    except dav_error.RateLimitError as exc:
        raise RateLimitedError(
            f"the server asked to slow down while {what}",
            status=429,
            retry_after=getattr(exc, "retry_after_seconds", None),
        ) from None
    except dav_error.AuthorizationError as exc:
        _raise_status(getattr(exc, "status", None) or 401, what)
    except dav_error.NotFoundError:
        raise ObjectNotFoundError(f"not found while {what}", status=404) from None
    except dav_error.DAVError as exc:
        status = _status_of(exc)
        if status:
            _raise_status(status, what)
        raise NotCalDAVError(f"the server's answer was not CalDAV while {what}") from None
    except http_errors.SSLError:
        raise TLSFailedError(
            f"the TLS connection failed (an untrusted certificate, or no https on that port) "
            f"while {what}"
        ) from None
    except (http_errors.Timeout, TimeoutError):
        raise TimedOutError(f"the server did not answer in time while {what}") from None
    except (http_errors.ConnectionError, ConnectionError, OSError) as exc:
        if _caused_by(exc, NameResolutionError):
            raise UnreachableError(
                f"the server's host name does not resolve while {what}"
            ) from None
        if _caused_by(exc, ProtocolError):
            raise UnreachableError(
                f"the server broke off its answer or sent invalid HTTP (e.g. endless headers) "
                f"while {what}"
            ) from None
        if isinstance(exc.__context__, ssl.SSLError) or "CERTIFICATE" in str(exc).upper():
            raise TLSFailedError(
                f"the TLS connection failed (an untrusted certificate, or no https on that port) "
                f"while {what}"
            ) from None
        raise UnreachableError(f"could not connect while {what}") from None
    except http_errors.RequestException:
        raise UnreachableError(f"the HTTP request failed while {what}") from None


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, kind) or any(isinstance(arg, kind) for arg in seen.args):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _size(count: int) -> str:
    if count >= 1024 * 1024 and count % (1024 * 1024) == 0:
        return f"{count // (1024 * 1024)} MiB"
    return f"{count} bytes"


def _status_of(exc: dav_error.DAVError) -> int | None:
    status = getattr(exc, "status", None)
    if isinstance(status, int):
        return status
    if isinstance(status, str) and status.isdigit():
        return int(status)
    reason = str(getattr(exc, "reason", "") or exc)
    for token in reason.replace("-", " ").split():
        if token.isdigit() and len(token) == 3:
            return int(token)
    return None


def _raise_status(status: int, what: str, retry_after: float | None = None) -> NoReturn:
    if status == 401:
        raise AuthenticationFailedError(
            f"the server refused the username or password while {what}", status=401
        )
    if status == 403:
        raise AccessDeniedError(
            f"the server does not allow this account to do that (it may be read-only) while {what}",
            status=403,
        )
    if status in (404, 410):
        raise ObjectNotFoundError(f"not found while {what}", status=status)
    if status == 412:
        raise PreconditionFailedError(f"the object changed on the server while {what}", status=412)
    if status == 429 or (status == 503 and retry_after is not None):
        raise RateLimitedError(
            f"the server asked to slow down while {what}", status=status, retry_after=retry_after
        )
    if status >= 500:
        raise ServerFailedError(f"the server failed (HTTP {status}) while {what}", status=status)
    raise RequestRejectedError(
        f"the server refused the request (HTTP {status}) while {what}", status=status
    )


def check_response(response: Any, what: str, ok: tuple[int, ...] = (200, 201, 204, 207)) -> None:
    """Raise the matching :class:`CalDAVError` unless ``response`` has an ``ok`` status."""
    status = int(response.status)
    if status in ok:
        return
    retry_after = None
    header = (response.headers or {}).get("Retry-After")
    if header:
        with contextlib.suppress(ValueError):
            retry_after = float(header)
    _raise_status(status, what, retry_after)


def request(
    client: DAVClient,
    url: str,
    method: str,
    what: str,
    body: str | bytes = "",
    headers: dict[str, str] | None = None,
    ok: tuple[int, ...] = (200, 201, 204, 207),
) -> Any:
    """Send one request through the library's session and check its status.

    Conditional PUT/DELETE with exact ``If-Match``/``If-None-Match`` control go
    through here rather than ``CalendarObjectResource.save()``, which re-parses
    and may retry a failed PUT with altered data - wrong for a sync engine that
    must write byte-identical objects.
    """
    with translate(what):
        # caldav annotates ``body`` as str but hands it to to_wire(), which takes bytes too.
        response = client.request(url, method, body, headers or {})  # type: ignore[arg-type]
    check_response(response, what, ok)
    return response
