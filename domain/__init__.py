"""caljournal domain."""
