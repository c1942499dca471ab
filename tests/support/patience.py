"""How long tests wait: generously, so a busy machine slows a test down but never fails it."""

from __future__ import annotations

# Seconds an HTTP request of a test may take (httpx's default of 5 s is not enough
# for a 5 MB PUT to Radicale while other tests keep both cores busy).
HTTP_TIMEOUT = 120.0

# The least time ``wait_until`` gives a condition, whatever a test asks for: a
# condition that holds returns at once, so only a failing test pays for this.
MIN_WAIT = 60.0
