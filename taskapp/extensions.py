"""The Flask extensions, created unbound; `create_app()` binds them to an app.

The rate limiter and CORS live with their rules, in taskapp.web.ratelimit and
taskapp.web.cors.
"""

import sqlite3
import time
from typing import Any

from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Engine, MetaData, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import ConnectionPoolEntry, Pool

from taskapp.auth.token_cache import CachingJWTManager
from taskapp.web.api import Api


class Base(DeclarativeBase):
    # Named constraints, so migrations (and SQLite's batch mode) can refer to them.
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


# Every column value is set in Python, so nothing needs reloading after a commit
# (which would cost a SELECT per write).
db = SQLAlchemy(model_class=Base, session_options={"expire_on_commit": False})
migrate = Migrate()
# flask-jwt-extended's JWTManager, verifying each accepted token once per worker.
jwt = CachingJWTManager()
api = Api()


@event.listens_for(Engine, "connect")
def _unicode_lower_on_sqlite(dbapi_connection: object, _record: object) -> None:
    # SQLite's lower() folds ASCII only, so `q` (ILIKE, which SQLAlchemy writes as
    # lower(x) LIKE lower(y) there) would miss "BRÛLÉE" in "brûlée". PostgreSQL's is fine.
    if isinstance(dbapi_connection, sqlite3.Connection):
        dbapi_connection.create_function("lower", 1, _lower, deterministic=True)


def _lower(text: Any) -> Any:
    return text.lower() if isinstance(text, str) else text


# A pooled connection left unused this long is tested before it is handed out, so a
# database that restarted or dropped idle connections (serverless PostgreSQL) meanwhile
# costs no request. A busy connection is not tested: SQLAlchemy's pool_pre_ping would
# add a round trip to every request. Reads that meet a connection dropped while it
# was busy are retried (taskapp.tasks.json_reads); a write gets 503 and Retry-After.
IDLE_SECONDS_BEFORE_PING = 1.0


@event.listens_for(Pool, "checkin")
def _note_idle_since(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    record.info["idle_since"] = time.monotonic()


@event.listens_for(Pool, "checkout")
def _ping_after_idle(dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
    idle_since = record.info.pop("idle_since", None)
    if idle_since is None or time.monotonic() - idle_since < IDLE_SECONDS_BEFORE_PING:
        return
    try:
        cursor = dbapi_connection.cursor()
        cursor.execute("SELECT 1")
        cursor.close()
        dbapi_connection.rollback()
    except Exception as error:  # any driver's error: the connection is gone
        # The pool's documented answer: it discards this one and connects anew.
        raise DisconnectionError() from error
