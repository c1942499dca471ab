"""Application service for accounts and API tokens."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

from cachetools import TTLCache
from eventsourcing.persistence import IntegrityError

from caljournal.adapters.journal import Journal
from caljournal.adapters.journal_ops import load_or_not_found
from caljournal.domain.account import Account, ApiToken, check_name
from caljournal.domain.cause import Cause
from caljournal.errors import AuthenticationError, ConflictError

TOKEN_PREFIX = "cj_"


def hash_token(token: str) -> str:
    """Return the stored form of a token.

    Tokens carry 256 random bits, so a plain SHA-256 is enough: there is nothing
    to brute-force that a slow password hash would protect.
    """
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: a token of one account, or an operator token (account None)."""

    token_id: UUID
    token_name: str
    account_id: UUID | None
    account_name: str | None

    @property
    def is_operator(self) -> bool:
        """Return True when the token may act on every account."""
        return self.account_id is None

    @property
    def actor(self) -> str:
        """Return the actor recorded in events caused by this principal."""
        if self.account_name is None:
            return f"operator-token:{self.token_name}"
        return f"token:{self.account_name}/{self.token_name}"


@dataclass(frozen=True)
class IssuedToken:
    """A freshly issued token; ``secret`` is shown once and never stored."""

    token_id: UUID
    name: str
    account_name: str | None
    secret: str


class TokenCache:
    """Principals of recently checked tokens, each kept for ``ttl`` seconds.

    Every API request presents a token; looking it up is about a tenth of an
    SQLite write's cost (see ``scripts/bench_api.py``). A revocation made
    through this process clears the cache at once; one made by another
    process (``caljournal token revoke``) takes effect within ``ttl``. Only
    tokens that were found valid are kept, so unknown tokens cannot fill it.
    cachetools' TTLCache keeps the entries; it is not thread-safe, hence the lock.
    """

    MAX_ENTRIES = 10_000

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._entries: TTLCache[str, Principal] = TTLCache(self.MAX_ENTRIES, ttl, timer=clock)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def get(self, digest: str) -> Principal | None:
        """Return the principal of a token checked less than ``ttl`` ago, or None."""
        with self._lock:
            self._entries.expire()  # drop what has expired, so it cannot come back
            return self._entries.get(digest)

    def put(self, digest: str, principal: Principal) -> None:
        """Keep a principal just read from the journal's token table."""
        if self.ttl <= 0:
            return
        with self._lock:
            self._entries[digest] = principal

    def clear(self) -> None:
        """Forget every principal (after a revocation)."""
        with self._lock:
            self._entries.clear()


class AccountService:
    """Open accounts, issue, list and revoke tokens, authenticate callers."""

    def __init__(self, journal: Journal, token_cache_seconds: float = 0.0) -> None:
        self.journal = journal
        self.tokens = TokenCache(token_cache_seconds)

    def open_account(self, name: str, cause: Cause, token_name: str = "default") -> IssuedToken:
        """Open an account and issue its first token.

        :raises ConflictError: when an account of that name (in any case) exists.
        :raises InvalidAccountError: when the name is unusable.
        """
        account = Account.open(name=name, cause=cause)
        token, secret = self._new_token(token_name, account.id, cause, name)
        try:
            self.journal.save(account, token)
        except IntegrityError:
            raise ConflictError(f"an account named {name!r} exists already") from None
        return IssuedToken(token.id, token.name, name, secret)

    def find_account(self, name: str) -> Account:
        """Return the account called ``name``.

        :raises NotFoundError: when there is none.
        """
        check_name("account", name)
        return load_or_not_found(
            self.journal, Account.id_for(name), Account, f"no account named {name!r}"
        )

    def account_name(self, account_id: UUID) -> str:
        """Return the name of an account.

        :raises NotFoundError: when there is none.
        """
        return load_or_not_found(self.journal, account_id, Account, f"no account {account_id}").name

    def list_accounts(self) -> list[dict[str, Any]]:
        """Return every account (id, name, created)."""
        return self.journal.journal_recorder.select_accounts()

    def issue_token(self, account_name: str | None, token_name: str, cause: Cause) -> IssuedToken:
        """Issue a token for an account, or an operator token when ``account_name`` is None.

        :raises NotFoundError: when the account does not exist.
        """
        account = self.find_account(account_name) if account_name else None
        token, secret = self._new_token(
            token_name, account.id if account else None, cause, account.name if account else None
        )
        self.journal.save(token)
        return IssuedToken(token.id, token.name, account_name, secret)

    def list_tokens(self, account_name: str | None) -> list[dict[str, Any]]:
        """Return the tokens of an account (operator tokens when None), without secrets."""
        account_id = str(self.find_account(account_name).id) if account_name else None
        rows = self.journal.journal_recorder.select_tokens(account_id)
        return [
            {
                "id": r["id"],
                "name": r["name"],
                "account": account_name,
                "revoked": bool(r["revoked"]),
                "created_us": r["created_us"],
            }
            for r in rows
        ]

    def revoke_token(self, token_id: UUID, cause: Cause) -> None:
        """Revoke a token by id.

        :raises NotFoundError: when there is no such token.
        :raises TokenRevokedError: when it is revoked already.
        """
        token = load_or_not_found(self.journal, token_id, ApiToken, f"no token {token_id}")
        token.revoke(cause=cause)
        self.journal.save(token)
        self.tokens.clear()

    def authenticate(self, secret: str) -> Principal:
        """Return the principal of a bearer token.

        :raises AuthenticationError: when the token is unknown or revoked.
        """
        if not secret.startswith(TOKEN_PREFIX) or len(secret) > 200:
            raise AuthenticationError("the bearer token is not a caljournal token")
        digest = hash_token(secret)
        cached = self.tokens.get(digest)
        if cached is not None:
            return cached
        row = self.journal.journal_recorder.select_token(digest)
        if row is None or not hmac.compare_digest(row["token_hash"], digest):
            raise AuthenticationError("the bearer token is unknown")
        if row["revoked"]:
            raise AuthenticationError("the bearer token was revoked")
        account_id = UUID(row["account_id"]) if row["account_id"] else None
        principal = Principal(UUID(row["id"]), row["name"], account_id, row["account_name"])
        self.tokens.put(digest, principal)
        return principal

    @staticmethod
    def _new_token(
        name: str, account_id: UUID | None, cause: Cause, account_name: str | None = None
    ) -> tuple[ApiToken, str]:
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token = ApiToken.issue(
            token_id=uuid4(),
            name=name,
            account_id=account_id,
            token_hash=hash_token(secret),
            cause=cause,
            account_name=account_name,
        )
        return token, secret
