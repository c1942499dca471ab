"""caljournal api."""
