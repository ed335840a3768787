"""One ``Database`` owns the async engine: opening (and migrating), transactions, health, closing.

SQLite (the default, no server) runs in WAL mode with ``synchronous=NORMAL`` (a committed
transaction survives a killed process; only an OS crash or power loss can lose the last ones),
a busy timeout, and foreign keys on. Write transactions start with ``BEGIN IMMEDIATE`` so that
two writers (two processes, say) queue on the lock instead of failing on a lock upgrade; reads
start a plain deferred ``BEGIN``. PostgreSQL is used by URL, through asyncpg.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, Insert, Select, create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, create_async_engine

from pulse_ai.config import DatabaseConfig, PulseConfig
from pulse_ai.db.models import Base
from pulse_ai.errors import ConfigError, DatabaseError
from pulse_ai.redaction import register_secrets

__all__ = ["DEFAULT_URL", "MIGRATIONS_DIR", "Database", "database_errors", "load", "normalize_url"]

Model = TypeVar("Model", bound=Base)
T = TypeVar("T")

DEFAULT_URL = DatabaseConfig().url
MIGRATIONS_DIR = Path(__file__).with_name("migrations")
BUSY_TIMEOUT_MS = 30_000
_READ_OPTION = "pulse_ai_read"
_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+pysqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+psycopg2": "postgresql+asyncpg",
    "postgresql+psycopg": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}


def normalize_url(url: str | URL | None) -> URL:
    """Any SQLite or PostgreSQL URL -> the same database through its async driver."""
    try:
        parsed = make_url(url or DEFAULT_URL)
    except ArgumentError:
        raise ConfigError("database.url is not a database URL") from None
    except ValueError:  # the port is not a number (the message would quote the URL, password included)
        raise ConfigError(
            "database.url: the port is not a number from 0 to 65535 (postgresql://user:password@host:5432/database)"
        ) from None
    if parsed.password is not None:
        register_secrets([str(parsed.password)])
    driver = _ASYNC_DRIVERS.get(parsed.drivername)
    if driver is None:
        raise ConfigError(
            f"database.url: unsupported scheme {parsed.drivername!r}; use sqlite:///PATH or postgresql://..."
        )
    parsed = parsed.set(drivername=driver)
    if driver.startswith("sqlite") and parsed.database in (None, "", ":memory:"):
        raise ConfigError("database.url: SQLite needs a file path (sqlite:///./data/pulse-ai.db), not memory")
    return parsed


def _describe(exc: BaseException) -> str:
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    first_line = (str(cause).strip().splitlines() or [""])[0][:200]
    return f"{type(cause).__name__}: {first_line}" if first_line else type(cause).__name__


@contextlib.contextmanager
def database_errors(what: str) -> Iterator[None]:
    """Translate a driver or SQLAlchemy failure into ``DatabaseError`` naming the operation.

    The text holds no SQL parameters (engines run with ``hide_parameters``)."""
    try:
        yield
    except (SQLAlchemyError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise DatabaseError(f"{what}: {_describe(exc)}") from exc


async def load(connection: AsyncConnection, query: Select[Model]) -> list[Model]:
    """Model instances for ``query`` inside the caller's transaction (which it leaves open)."""
    async with AsyncSession(bind=connection, expire_on_commit=False) as session:
        return list((await session.scalars(query)).all())


def _make_parent_directory(path: str) -> None:
    Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event emit BEGIN itself (the driver's own implicit BEGIN would be
    # deferred and would not cover DDL).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in (
        f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}",
        "PRAGMA journal_mode=WAL",
        "PRAGMA synchronous=NORMAL",
        "PRAGMA foreign_keys=ON",
    ):
        cursor.execute(pragma)
    cursor.close()


def _sqlite_on_begin(connection: Connection) -> None:
    read_only = connection.get_execution_options().get(_READ_OPTION, False)
    connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


class Database:
    """The platform's database. Open with ``await Database.open(url)``; close with ``await db.close()``
    (or ``async with``). Every module reads and writes through :meth:`read` and :meth:`write`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.url = engine.url
        self.dialect = engine.dialect.name  # "sqlite" | "postgresql"
        # SQLite's hot write path (the group-commit writer) runs whole transactions in one thread
        # with the plain sqlite3 driver: one hop per transaction instead of one per statement.
        self._write_thread: ThreadPoolExecutor | None = None
        self._sync_engine: Engine | None = None

    def __repr__(self) -> str:
        return f"Database({self.display_url!r})"

    @property
    def display_url(self) -> str:
        return self.url.render_as_string(hide_password=True)

    @classmethod
    async def open(cls, url: str | URL | None = None, *, upgrade: bool | None = None, pool_size: int = 5) -> Database:
        """Open the database at ``url`` (default: ``./data/pulse-ai.db``).

        ``upgrade=None`` migrates SQLite to the newest schema on first use and only checks
        PostgreSQL (migrate it with ``pulse-ai db upgrade``); ``True`` migrates, ``False`` checks.
        A schema the code does not match is a ``DatabaseError``."""
        parsed = normalize_url(url)
        if parsed.drivername.startswith("sqlite"):
            assert parsed.database is not None
            with database_errors("create the database directory"):
                await asyncio.to_thread(_make_parent_directory, parsed.database)
            engine = create_async_engine(
                parsed, hide_parameters=True, pool_size=pool_size, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000}
            )
            event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
            event.listen(engine.sync_engine, "begin", _sqlite_on_begin)
        else:
            engine = create_async_engine(
                parsed,
                hide_parameters=True,
                pool_size=pool_size,
                max_overflow=pool_size,
                pool_recycle=1800,
                connect_args={"timeout": 10, "server_settings": {"timezone": "UTC", "application_name": "pulse-ai"}},
            )
        db = cls(engine)
        try:
            if upgrade or (upgrade is None and db.dialect == "sqlite"):
                await db.upgrade()
            else:
                await db.check_schema()
        except BaseException:
            await engine.dispose()
            raise
        return db

    @classmethod
    async def from_config(cls, config: PulseConfig | DatabaseConfig | None, *, upgrade: bool | None = None) -> Database:
        if isinstance(config, PulseConfig):
            config = config.database
        return await cls.open(config.url if config else None, upgrade=upgrade)

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._write_thread is not None:
            thread, self._write_thread = self._write_thread, None
            await asyncio.to_thread(thread.shutdown, wait=True)
        if self._sync_engine is not None:
            self._sync_engine.dispose()
            self._sync_engine = None
        await self.engine.dispose()

    async def run_write(self, what: str, work: Callable[[Connection], T]) -> T:
        """Run ``work`` (synchronous code on a sync ``Connection``) in one write transaction.

        On SQLite the whole transaction runs in one dedicated thread (sqlite3, the same pragmas and
        ``BEGIN IMMEDIATE``); on PostgreSQL it runs on the async connection through ``run_sync``.
        Failures become ``DatabaseError`` naming ``what``."""
        if self.dialect != "sqlite":
            async with self.write(what) as connection:
                return await connection.run_sync(work)
        if self._write_thread is None:
            self._write_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pulse-ai-sqlite-writer")
            engine = create_engine(
                self.url.set(drivername="sqlite+pysqlite"),
                hide_parameters=True,
                pool_size=1,
                max_overflow=0,
                connect_args={"timeout": BUSY_TIMEOUT_MS / 1000},
            )
            event.listen(engine, "connect", _sqlite_on_connect)
            event.listen(engine, "begin", _sqlite_on_begin)
            self._sync_engine = engine
        sync_engine = self._sync_engine
        assert sync_engine is not None

        def transaction() -> T:
            with database_errors(what), sync_engine.begin() as connection:
                return work(connection)

        return await asyncio.get_running_loop().run_in_executor(self._write_thread, transaction)

    @contextlib.asynccontextmanager
    async def write(self, what: str) -> AsyncIterator[AsyncConnection]:
        """One write transaction, committed on exit; failures become ``DatabaseError`` naming ``what``."""
        with database_errors(what):
            async with self.engine.begin() as connection:
                yield connection

    @contextlib.asynccontextmanager
    async def read(self, what: str) -> AsyncIterator[AsyncConnection]:
        """One read transaction (on SQLite it takes no write lock)."""
        with database_errors(what):
            async with self.engine.connect() as connection:
                await connection.execution_options(**{_READ_OPTION: True})
                async with connection.begin():
                    yield connection

    def insert_ignoring_conflicts(self, model: type[Base], *conflict_columns: str) -> Insert:
        """``INSERT ... ON CONFLICT DO NOTHING``: "already exists" is success, and nothing is overwritten."""
        if self.dialect == "postgresql":
            return postgresql.insert(model).on_conflict_do_nothing(index_elements=list(conflict_columns) or None)
        return sqlite.insert(model).on_conflict_do_nothing(index_elements=list(conflict_columns) or None)

    async def ping(self) -> None:
        """Health: one round trip; ``DatabaseError`` when the database cannot answer."""
        async with self.read("ping the database") as connection:
            await connection.execute(text("SELECT 1"))

    # -- migrations -------------------------------------------------------------------------

    @staticmethod
    def alembic_config() -> Config:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        return config

    @classmethod
    def head_revision(cls) -> str:
        heads = ScriptDirectory.from_config(cls.alembic_config()).get_heads()
        if len(heads) != 1:
            raise DatabaseError(f"the migrations have {len(heads)} heads; they must form one line")
        return heads[0]

    async def upgrade(self, revision: str = "head") -> None:
        """Run the migrations up to ``revision`` (idempotent; concurrent upgraders queue on a lock)."""

        def run(connection: Connection) -> None:
            config = self.alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, revision)

        async with self.write("upgrade the database schema") as connection:
            await connection.run_sync(run)

    async def current_revision(self) -> str | None:
        def read(connection: Connection) -> str | None:
            return MigrationContext.configure(connection).get_current_revision()

        async with self.read("read the schema revision") as connection:
            return await connection.run_sync(read)

    async def check_schema(self) -> None:
        current, head = await self.current_revision(), self.head_revision()
        if current != head:
            raise DatabaseError(
                f"the database {self.display_url} is at schema revision {current or 'none (empty)'}, this code "
                f"needs {head}: run `pulse-ai db upgrade`"
            )

    async def schema_differences(self) -> list[Any]:
        """What autogenerate would change to make the database match the models (empty: they agree)."""

        def compare(connection: Connection) -> list[Any]:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))

        async with self.read("compare the schema with the models") as connection:
            return await connection.run_sync(compare)
