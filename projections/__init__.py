"""caljournal projections."""
