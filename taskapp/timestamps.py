"""Timezone-aware UTC timestamps that survive a round trip through SQLite too."""

from datetime import UTC, datetime

from sqlalchemy import DateTime
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


def in_utc(moment: datetime) -> datetime:
    """An aware moment in UTC: the one check of every timestamp a request sends.

    Raises ValueError when `moment` has no offset (its zone is a guess), or when UTC
    cannot hold it: 0001-01-01T00:00:00+01:00 is valid ISO 8601, but in UTC it falls
    in the year 0, and converting it (as binding it to a statement does) raises
    OverflowError, which would otherwise reach the client as a 500. Every moment that
    passes is one both databases store and compare (PostgreSQL's range is far wider;
    SQLite's text compares in order for the years 1 to 9999).
    """
    if moment.utcoffset() is None:
        raise ValueError("Must have an offset, e.g. Z or +02:00.")
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError("Must be a moment between the years 1 and 9999 in UTC.") from None


class UTCDateTime(TypeDecorator[datetime]):
    """`timestamptz` on PostgreSQL; naive UTC text on SQLite, read back as UTC.

    SQLite has no time zone type and SQLAlchemy drops the offset there, so values
    are stored in UTC and marked as UTC again when loaded. Naive datetimes are
    refused: their zone is a guess.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given for a UTC timestamp column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
