"""caljournal adapters."""
