"""The composition root: builds everything from settings, nothing at import time."""

from __future__ import annotations

from dataclasses import dataclass, field

from caljournal.accounts import AccountService
from caljournal.adapters.journal import Journal, open_journal
from caljournal.appointments import AppointmentService
from caljournal.settings import Settings, load_settings


@dataclass
class Container:
    """The running parts of one caljournal process."""

    settings: Settings
    journal: Journal
    accounts: AccountService = field(init=False)
    appointments: AppointmentService = field(init=False)

    def __post_init__(self) -> None:
        self.accounts = AccountService(self.journal)
        self.appointments = AppointmentService(self.journal)

    @property
    def backend(self) -> str:
        """Return ``sqlite`` or ``postgresql``."""
        return "sqlite" if self.settings.database_url.startswith("sqlite") else "postgresql"

    def close(self) -> None:
        """Release database connections."""
        self.journal.close()


def bootstrap(settings: Settings | None = None) -> Container:
    """Build the container from ``settings`` (read from the environment when None).

    :raises ConfigurationError: when the configuration is unusable.
    """
    settings = settings or load_settings()
    return Container(settings=settings, journal=open_journal(settings))
