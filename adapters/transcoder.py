"""The journal's transcoder: the library's JSON transcoder, its encoder built once.

``json.JSONEncoder.encode`` builds a new C encoder (and a float formatter) on
every call; the journal encodes twice per appointment event (the event, and
the personal values it seals), so a first import of 10,000 objects built
20,000 of them. :class:`JournalTranscoder` builds the same C encoder once, with
the library's settings, and writes the same bytes (a property test holds it to
the library's output). It keeps no state between calls (no circular-reference
markers: the journal's events are trees), so threads may share it.
"""

from __future__ import annotations

import json.encoder
from collections.abc import Callable, Iterable
from typing import Any

from eventsourcing.persistence import JSONTranscoder


def _c_encoder(default: Callable[[Any], Any]) -> Callable[[Any, int], Iterable[str]] | None:
    """Return the standard library's C encoder with the library's settings, or None without it."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - an interpreter without the C accelerator
        return None
    # The arguments of json.JSONEncoder.iterencode for the library's encoder:
    # no markers, its default, strings not ASCII-escaped, no indent, ":" and ","
    # separators, keys unsorted, no keys skipped, NaN allowed.
    encoder: Callable[[Any, int], Iterable[str]] = make(
        None, default, json.encoder.encode_basestring, None, ":", ",", False, False, True
    )
    return encoder


class JournalTranscoder(JSONTranscoder):
    """The library's JSON transcoder, encoding with one C encoder made at construction."""

    def __init__(self) -> None:
        super().__init__()
        self._encode_tree = _c_encoder(self._encode_obj)

    def encode(self, obj: Any) -> bytes:
        """Encode ``obj`` exactly as the library's transcoder does."""
        if self._encode_tree is None or isinstance(obj, str):  # pragma: no cover - see above
            return super().encode(obj)
        return "".join(self._encode_tree(obj, 0)).encode("utf8")
