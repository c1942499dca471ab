"""caljournal: an event-sourced appointment journal that keeps CalDAV calendars in sync."""

__version__ = "0.1.0"
