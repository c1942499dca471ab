"""Allow ``python -m caljournal``."""

from caljournal.scripts.cli import main

main()
