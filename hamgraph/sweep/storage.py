"""Where studies live: a storage URL (journal file by default) -> an Optuna storage.

The default is Optuna's JournalStorage with a JournalFileBackend at `<out>/optuna-journal.log`:
several local processes append to it under a file lock and replay it, which is exactly the
multi-process case. SQLite is not the default because concurrent writers serialize on one
database lock and time out with "database is locked" under load, and SQLite file locking is
unreliable on network file systems; use `--storage postgresql://...` for several machines.
`--storage` takes any Optuna RDB URL (`sqlite:///f.db`, `postgresql://...`,
`mysql+pymysql://...`) or `journal:PATH`. Dead workers are found the same way on every
storage: hamgraph.sweep.coordination writes its own heartbeat on each running trial (Optuna's
RDB heartbeat only runs inside `Study.optimize`, which hamgraph does not use).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna

from hamgraph.errors import HamgraphError, UserInputError

JOURNAL_FILE = "optuna-journal.log"  # default storage under the out dir
HEARTBEAT_SECONDS = 60  # how often a worker beats on its running trials (every storage)
GRACE_SECONDS = 180  # a trial without a heartbeat for this long is stale (dead worker)


def storage_url(storage: str | None, out: Path) -> str:
    """The normalized storage URL: `journal:PATH` or an SQLAlchemy URL with a driver we have."""
    if storage is None:
        return f"journal:{(out / JOURNAL_FILE).resolve()}"
    storage = storage.strip()
    if storage.startswith("journal:"):
        path = storage[len("journal:"):]
        if not path:
            raise UserInputError("--storage journal:PATH needs a file path")
        return f"journal:{Path(path).expanduser().resolve()}"
    scheme = storage.split("://", 1)[0]
    if "://" not in storage or not scheme:
        raise UserInputError(
            f"--storage {storage!r}: expected an RDB URL (sqlite:///f.db, postgresql://...)"
            " or journal:PATH"
        )
    if scheme in ("postgresql", "postgres"):
        rest = storage.split("://", 1)[1]
        try:
            import psycopg2  # noqa: F401

            return f"postgresql://{rest}"
        except ImportError:
            return f"postgresql+psycopg://{rest}"
    return storage


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """JournalStorage for `journal:PATH`, else RDBStorage (heartbeats: coordination)."""
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(url[len("journal:"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        engine_kwargs["pool_pre_ping"] = True
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except ImportError as exc:
        raise UserInputError(f"--storage {redact(url)}: missing database driver: {exc}") from None
    except Exception as exc:  # sqlalchemy.exc.OperationalError & co: unreachable, bad credentials
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HamgraphError(f"--storage {redact(url)}: cannot open the database: {first}") from None


def redact(url: str) -> str:
    """The URL without its password."""
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        if ":" in creds:
            return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return url


def dashboard_arg(url: str) -> str:
    """What to give `optuna-dashboard` for this storage (a journal file opens by its path)."""
    return url[len("journal:"):] if url.startswith("journal:") else redact(url)


def is_journal(storage: optuna.storages.BaseStorage) -> bool:
    from optuna.storages.journal import JournalStorage

    return isinstance(storage, JournalStorage)
