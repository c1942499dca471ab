"""caljournal scripts."""
