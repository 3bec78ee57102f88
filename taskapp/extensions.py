"""The Flask extensions, created unbound; `create_app()` binds them to an app."""

import sqlite3

from flask import current_app
from flask_cors import CORS
from flask_jwt_extended import JWTManager
from flask_limiter import ApplicationLimit, Limiter
from flask_limiter.util import get_remote_address
from flask_migrate import Migrate
from flask_smorest import Api
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Engine, MetaData, event
from sqlalchemy.orm import DeclarativeBase


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
jwt = JWTManager()
api = Api()
cors = CORS()
# Every request counts against its client IP's limit before anything else runs;
# taskapp.web.ratelimit adds the per-user limit once the token is verified. The limit
# values are read per request, since tests build several apps in one process
# (Flask-Limiter keeps its storage on this object: the last app bound sets it).
limiter = Limiter(
    get_remote_address,
    application_limits=[
        ApplicationLimit(lambda: current_app.config["RATELIMIT_PER_IP"], scope="ip")
    ],
    strategy="fixed-window",
    # Headers are written by taskapp.web.ratelimit: Flask-Limiter's own add Retry-After
    # to every answer and would stretch a 503's Retry-After to the window's end.
    headers_enabled=False,
    # Storage down (Redis): count in this process's memory until it is back, and
    # never fail a request because of the limiter.
    in_memory_fallback_enabled=True,
    swallow_errors=True,
)


@event.listens_for(Engine, "connect")
def _unicode_lower_on_sqlite(dbapi_connection, _record):
    # SQLite's lower() folds ASCII only, so `q` (ILIKE, which SQLAlchemy writes as
    # lower(x) LIKE lower(y) there) would miss "BRÛLÉE" in "brûlée". PostgreSQL's is fine.
    if isinstance(dbapi_connection, sqlite3.Connection):
        dbapi_connection.create_function("lower", 1, _lower, deterministic=True)


def _lower(text):
    return text.lower() if isinstance(text, str) else text
