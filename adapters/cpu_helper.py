"""A CPU pool helper process: runs module-level functions over items sent on its standard input.

Started by :class:`caljournal.adapters.cpu_pool.ProcessPool` as
``python -m caljournal.adapters.cpu_helper``. Every message either way is a
frame: an 8-byte big-endian length, then a pickle. The first frame in is the
owner's ``sys.path``; each later one is ``(function, items)``, answered with
``("ok", results)`` or ``("error", exception)``. An end of file on the
standard input (the owner closed it, or died) ends the helper. Its standard
output carries only frames: anything printed goes to the standard error.
"""

from __future__ import annotations

import os
import pickle
import struct
import sys
from typing import IO, Any

HEADER = struct.Struct(">Q")


def write_frame(stream: IO[bytes], value: Any) -> None:
    """Write one frame and flush it."""
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(HEADER.pack(len(data)) + data)
    stream.flush()


def read_frame(stream: IO[bytes]) -> Any:
    """Read one frame; raise EOFError at the end of the stream (or within a frame)."""
    return pickle.loads(read_raw(stream))  # noqa: S301 - frames come from the owner only


def read_raw(stream: IO[bytes]) -> bytes:
    """Read one frame's pickle, not yet loaded; raise EOFError at the end of the stream."""
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        raise EOFError("the stream ended")
    (size,) = HEADER.unpack(header)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError("the stream ended within a frame")
    return bytes(data)


def _answer(work: bytes) -> tuple[str, Any]:
    """Run a ``(function, items)`` frame: the results, or the exception that stopped it."""
    try:
        function, items = pickle.loads(work)  # noqa: S301 - frames come from the owner only
        return "ok", [function(item) for item in items]
    except Exception as exc:  # noqa: BLE001 - handed to the owner, which raises it
        try:
            pickle.dumps(exc)
        except Exception:  # noqa: BLE001 - an exception that does not pickle
            return "error", RuntimeError(f"{type(exc).__name__}: {exc}")
        return "error", exc


def main() -> None:
    """Serve frames until the owner closes the standard input."""
    frames_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print must not corrupt the frames
    frames_in = sys.stdin.buffer
    try:
        sys.path[:] = read_frame(frames_in)
        while True:
            write_frame(frames_out, _answer(read_raw(frames_in)))
    except (EOFError, BrokenPipeError):
        return


if __name__ == "__main__":
    main()
