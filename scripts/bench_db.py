"""Scratch journals for the benchmarks: a fresh SQLite file or PostgreSQL schema."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

PG_URL = os.environ.get("CALJOURNAL_BENCH_PG_URL", "postgresql://root@127.0.0.1:5432/test")


@contextmanager
def scratch_journal_url(backend: str, work: Path, name: str) -> Iterator[str]:
    """Yield the database URL of a fresh journal named ``name``; drop its schema afterwards.

    ``backend`` is "sqlite" (a file in ``work``) or "postgres" (a new schema in
    the database at ``CALJOURNAL_BENCH_PG_URL``).
    """
    if backend == "sqlite":
        yield f"sqlite:///{work / f'{name}.sqlite'}"
        return
    schema = f"{name.replace('-', '_')}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{PG_URL}?schema={schema}"
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
