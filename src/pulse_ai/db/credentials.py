"""Provider credentials (bring-your-own-key), encrypted at rest with Fernet.

The keys come from ``PULSE_AI_SECRET_KEYS``: comma-separated Fernet keys, the first one current
(new values are encrypted with it), the others still accepted for decryption, so a key can be
rotated: put the new key first, run ``pulse-ai credentials rotate``, then drop the old one.
Secrets leave this module only as ``pydantic.SecretStr``; no repr, log line or error holds one.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import SecretStr
from sqlalchemy import delete, select, update

from pulse_ai.config import NAME_PATTERN
from pulse_ai.db.changes import counts_change
from pulse_ai.db.database import Database
from pulse_ai.db.ids import new_id, validate_tenant_id
from pulse_ai.db.models import ProviderCredentialRow, TenantRow
from pulse_ai.db.types import utcnow
from pulse_ai.errors import InputError, NotFoundError, SecretKeyError

__all__ = ["MAX_SECRET_CHARS", "SECRET_KEYS_ENV", "CredentialInfo", "Credentials", "SecretKeyring", "validate_secret"]

SECRET_KEYS_ENV = "PULSE_AI_SECRET_KEYS"


class SecretKeyring:
    """The Fernet keys; the first encrypts, all decrypt."""

    def __init__(self, keys: Sequence[str | bytes]) -> None:
        if not keys:
            raise SecretKeyError(f"{SECRET_KEYS_ENV} holds no key")
        fernets = []
        for number, key in enumerate(keys, start=1):
            try:
                fernets.append(Fernet(key.strip()))
            except (ValueError, TypeError):
                # never echo the value: it is (meant to be) a secret
                raise SecretKeyError(
                    f"{SECRET_KEYS_ENV}: key {number} of {len(keys)} is not a Fernet key (32 url-safe "
                    "base64-encoded bytes); make one with `pulse-ai credentials generate-key`"
                ) from None
        self._fernet = MultiFernet(fernets)
        self.key_count = len(fernets)

    def __repr__(self) -> str:
        return f"SecretKeyring({self.key_count} keys)"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SecretKeyring | None:
        """The keyring from ``PULSE_AI_SECRET_KEYS``, or None when it is unset or empty."""
        raw = (os.environ if environ is None else environ).get(SECRET_KEYS_ENV, "")
        keys = [part for part in (p.strip() for p in raw.split(",")) if part]
        return cls(keys) if keys else None

    @staticmethod
    def generate_key() -> str:
        return Fernet.generate_key().decode("ascii")

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except InvalidToken:
            raise SecretKeyError(f"a stored credential cannot be decrypted with any key in {SECRET_KEYS_ENV}") from None

    def rotate(self, token: str) -> str:
        try:
            return self._fernet.rotate(token.encode("ascii")).decode("ascii")
        except InvalidToken:
            raise SecretKeyError(f"a stored credential cannot be decrypted with any key in {SECRET_KEYS_ENV}") from None


@dataclass(frozen=True)
class CredentialInfo:
    """A stored credential's facts, never its value."""

    tenant_id: str
    provider: str
    created_at: datetime
    updated_at: datetime


MAX_SECRET_CHARS = 4096  # far above any provider's key; a bound on what is encrypted and stored


def _provider(value: str, known: Collection[str] | None = None) -> str:
    if not isinstance(value, str) or not re.match(NAME_PATTERN, value):
        raise InputError(f"provider {str(value)[:80]!a} is not a provider name (must match {NAME_PATTERN})")
    if known is not None and value not in known:
        listed = ", ".join(sorted(known)) or "none"
        raise InputError(f"unknown provider {value!r}; providers that take a key of their own: {listed}")
    return value


def validate_secret(secret: SecretStr | str) -> str:
    """The secret's value, checked: a non-empty string of at most ``MAX_SECRET_CHARS`` characters,
    without whitespace, newlines or other control characters (a key pasted with a line break or a
    stray space would fail at the provider, far from here). Errors say what is wrong and where, and
    never hold the value."""
    value = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
    if not isinstance(value, str):
        raise InputError(f"the secret must be a string, not {type(value).__name__}")
    if not value:
        raise InputError("the secret is empty")
    if len(value) > MAX_SECRET_CHARS:
        raise InputError(f"the secret has {len(value)} characters; at most {MAX_SECRET_CHARS}")
    for position, char in enumerate(value):
        if char in "\r\n":
            raise InputError(f"the secret holds a line break at character {position}; give it on one line")
        if char.isspace():
            raise InputError(f"the secret holds whitespace at character {position}; provider keys have none")
        category = unicodedata.category(char)
        if category in ("Cc", "Cf", "Cs", "Co", "Cn"):
            kind = "an invalid (surrogate) character" if category == "Cs" else "a control or invisible character"
            raise InputError(f"the secret holds {kind} at character {position}")
    return value


class Credentials:
    """Per-tenant provider credentials. Build with :meth:`open`, which checks the keys at start-up."""

    changes = 0  # writes made through this object (caches of tenants' state watch it)

    def __init__(
        self, db: Database, keyring: SecretKeyring | None, *, providers: Collection[str] | None = None
    ) -> None:
        """``providers``: the names a credential may be stored for (the configuration's providers
        that take an API key); None accepts any well-formed name."""
        self.db = db
        self.keyring = keyring
        self.providers = frozenset(providers) if providers is not None else None

    def __repr__(self) -> str:
        return f"Credentials({self.db!r}, {self.keyring!r})"

    @classmethod
    async def open(
        cls, db: Database, keyring: SecretKeyring | None = None, *, providers: Collection[str] | None = None
    ) -> Credentials:
        """Credentials with ``keyring`` (default: from the environment), after :meth:`check`."""
        credentials = cls(db, keyring if keyring is not None else SecretKeyring.from_env(), providers=providers)
        await credentials.check()
        return credentials

    async def check(self) -> None:
        """``SecretKeyError`` when encrypted rows exist but no key is set, or when a row cannot be
        decrypted with the keys (each row is tried: a rotation left half done is caught here)."""
        async with self.db.read("check stored credentials") as connection:
            rows = (
                await connection.execute(
                    select(
                        ProviderCredentialRow.tenant_id,
                        ProviderCredentialRow.provider,
                        ProviderCredentialRow.ciphertext,
                    )
                )
            ).all()
        if not rows:
            return
        if self.keyring is None:
            raise SecretKeyError(
                f"the database holds {len(rows)} encrypted provider credential(s) but {SECRET_KEYS_ENV} is not set; "
                "set it to the key(s) they were encrypted with"
            )
        for row in rows:
            try:
                self.keyring.decrypt(row.ciphertext)
            except SecretKeyError:
                raise SecretKeyError(
                    f"the credential of tenant {row.tenant_id!r} for provider {row.provider!r} cannot be decrypted "
                    f"with any key in {SECRET_KEYS_ENV}"
                ) from None

    def _require_keyring(self) -> SecretKeyring:
        if self.keyring is None:
            raise SecretKeyError(
                f"{SECRET_KEYS_ENV} is not set; make a key with `pulse-ai credentials generate-key` and export it"
            )
        return self.keyring

    @counts_change
    async def set(self, tenant_id: str, provider: str, secret: SecretStr | str) -> CredentialInfo:
        """Store (or replace) the tenant's credential for ``provider``, encrypted with the current key."""
        tenant_id = validate_tenant_id(tenant_id)
        provider = _provider(provider, self.providers)
        value = validate_secret(secret)
        ciphertext = self._require_keyring().encrypt(value)
        now = utcnow()
        async with self.db.write("store a provider credential") as connection:
            if await connection.scalar(select(TenantRow.id).where(TenantRow.id == tenant_id)) is None:
                raise NotFoundError(f"no tenant {tenant_id!r}")
            result = await connection.execute(
                update(ProviderCredentialRow)
                .where(ProviderCredentialRow.tenant_id == tenant_id, ProviderCredentialRow.provider == provider)
                .values(ciphertext=ciphertext, updated_at=now)
            )
            if result.rowcount == 0:
                await connection.execute(
                    self.db.insert_ignoring_conflicts(ProviderCredentialRow),
                    {
                        "id": new_id(),
                        "tenant_id": tenant_id,
                        "provider": provider,
                        "ciphertext": ciphertext,
                        "created_at": now,
                        "updated_at": now,
                    },
                )
        return (await self.list(tenant_id, provider=provider))[0]

    async def get(self, tenant_id: str, provider: str) -> SecretStr:
        tenant_id = validate_tenant_id(tenant_id)
        async with self.db.read("read a provider credential") as connection:
            token = await connection.scalar(
                select(ProviderCredentialRow.ciphertext).where(
                    ProviderCredentialRow.tenant_id == tenant_id, ProviderCredentialRow.provider == provider
                )
            )
        if token is None:
            raise NotFoundError(f"tenant {tenant_id!r} has no credential for provider {provider!r}")
        return SecretStr(self._require_keyring().decrypt(token))

    async def list(self, tenant_id: str | None = None, *, provider: str | None = None) -> list[CredentialInfo]:
        query = select(
            ProviderCredentialRow.tenant_id,
            ProviderCredentialRow.provider,
            ProviderCredentialRow.created_at,
            ProviderCredentialRow.updated_at,
        ).order_by(ProviderCredentialRow.tenant_id, ProviderCredentialRow.provider)
        if tenant_id is not None:
            query = query.where(ProviderCredentialRow.tenant_id == validate_tenant_id(tenant_id))
        if provider is not None:
            query = query.where(ProviderCredentialRow.provider == provider)
        async with self.db.read("list provider credentials") as connection:
            rows = (await connection.execute(query)).all()
        return [CredentialInfo(r.tenant_id, r.provider, r.created_at, r.updated_at) for r in rows]

    @counts_change
    async def delete(self, tenant_id: str, provider: str) -> bool:
        tenant_id = validate_tenant_id(tenant_id)
        async with self.db.write("delete a provider credential") as connection:
            result = await connection.execute(
                delete(ProviderCredentialRow).where(
                    ProviderCredentialRow.tenant_id == tenant_id, ProviderCredentialRow.provider == provider
                )
            )
        return bool(result.rowcount)

    @counts_change
    async def rotate(self) -> int:
        """Re-encrypt every stored credential with the current (first) key, in one transaction.
        Returns how many were re-encrypted. A row no key can read aborts it all (``SecretKeyError``)."""
        keyring = self._require_keyring()
        async with self.db.write("re-encrypt provider credentials") as connection:
            rows = (await connection.execute(select(ProviderCredentialRow.id, ProviderCredentialRow.ciphertext))).all()
            if rows:
                now = utcnow()
                for row in rows:
                    await connection.execute(
                        update(ProviderCredentialRow)
                        .where(ProviderCredentialRow.id == row.id)
                        .values(ciphertext=keyring.rotate(row.ciphertext), updated_at=now)
                    )
        return len(rows)
