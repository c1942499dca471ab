"""An href from a calendar server as the absolute URL the caldav library makes of it, faster.

Why hand-written: reading a large calendar joins every object's href to the
calendar's URL, once in the delta and once more where it is loaded, and the
library's ``URL.join`` builds several ``URL`` objects per call through
``__getattr__`` (under the profiler, 1.2 s of a 10,000-object first import on Xandikos).
An href that is an absolute path, which is what servers send, is joined here
with the standard library to exactly the text the library's join gives (a
property test holds the two equal); anything else (another host, a relative
path, tabs or line breaks) takes the library's join. :meth:`HrefJoiner.spelled`
then writes every member of the calendar in one spelling.
"""

from __future__ import annotations

from urllib.parse import ParseResult, unquote, urlparse, urlsplit, urlunsplit

from caldav.lib.url import URL, normalise_path

_DROPPED = frozenset("\t\r\n")
#: Absent from an absolute-path href, the href is its own joined path (see ``spelled``).
_NOT_PLAIN = _DROPPED | frozenset(";?#")


class HrefJoiner:
    """Joins hrefs to a calendar's URL (``base``), as ``str(base.join(href))`` does.

    ``calendar_url`` is the calendar's URL as given (default: ``base``'s text),
    the prefix of the hrefs :meth:`spelled` returns for its members.
    """

    def __init__(self, base: URL, calendar_url: str | None = None) -> None:
        self.base = base
        self.calendar_url = calendar_url if calendar_url is not None else str(base)
        parts = urlparse(str(base))
        self._scheme, self._netloc = parts.scheme, parts.netloc
        self._path = unquote(urlsplit(self.calendar_url).path)

    def join(self, href: str) -> str:
        """Return ``href`` from a server as an absolute URL.

        :raises ValueError: where the library's join does (an href on another host).
        """
        # urlparse drops tabs and line breaks first, which can turn "/\n/x" into "//x".
        if href.startswith("/") and not href.startswith("//") and not _DROPPED.intersection(href):
            path = urlparse(href)
            return ParseResult(
                self._scheme, self._netloc, path.path, path.params, path.query, path.fragment
            ).geturl()
        return str(self.base.join(href))

    def spelled(self, href: str, preserve: bool) -> str:
        """Return the absolute URL of an href from the server, in one spelling.

        Servers and the library spell an href in more than one way: the
        library re-quotes the hrefs of a sync-collection answer (``@`` as
        ``%40``), Xandikos sends a literal ``@`` in a PROPFIND. Listings and
        deltas must name an object alike, or a known object would look
        deleted and a new one appear. A member of the calendar is spelled as
        ``calendar_url`` (as given, the prefix of every href this process
        writes) plus its re-quoted name; where the library's profile
        says the two spellings of ``@`` are two resources (``preserve``), the
        ``@`` is left as sent.
        """
        # A plain absolute path (what servers send for each member) is the path of
        # its own join: the member test needs no URL built and taken apart.
        plain = href.startswith("/") and not href.startswith("//") and _NOT_PLAIN.isdisjoint(href)
        parts = None if plain else urlsplit(self.join(href))
        folder, _, name = (href if parts is None else parts.path).rpartition("/")
        if name and unquote(folder + "/") == self._path:
            return self.calendar_url + normalise_path(name, safe="", preserve_at=preserve)
        parts = parts or urlsplit(self.join(href))
        return urlunsplit(parts._replace(path=normalise_path(parts.path, preserve_at=preserve)))
