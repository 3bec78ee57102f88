"""Commands: `flask dev-token`, `flask seed` and `flask purge` (also called by its first
name, `flask purge-idempotency-keys`)."""

from datetime import timedelta

import click
from flask import Flask, current_app
from flask.cli import with_appcontext
from flask_jwt_extended import create_access_token

from taskapp.extensions import db
from taskapp.models import Task
from taskapp.tasks import changes, idempotency


def register_commands(app: Flask) -> None:
    app.cli.add_command(dev_token)
    app.cli.add_command(seed)
    app.cli.add_command(purge)
    # Its first name, which cron jobs written before the change feed still call.
    app.cli.add_command(purge, "purge-idempotency-keys")


@click.command("dev-token")
@with_appcontext
@click.argument("user_id")
@click.option("--minutes", default=60, show_default=True, type=click.IntRange(1, 60 * 24 * 30))
def dev_token(user_id: str, minutes: int) -> None:
    """Print an HS256 token for USER_ID, signed with the configured secret."""
    if current_app.config["JWKS_URL"] or not current_app.config["JWT_SECRET_KEY"]:
        raise click.ClickException(
            "dev-token signs with BETTER_AUTH_SECRET; this app verifies Better Auth's JWKS instead"
        )
    token = create_access_token(identity=user_id, expires_delta=timedelta(minutes=minutes))
    click.echo(token)


@click.command("seed")
@with_appcontext
@click.argument("user_id")
@click.option("--count", default=10, show_default=True, type=click.IntRange(1, 100_000))
def seed(user_id: str, count: int) -> None:
    """Create COUNT demo tasks for USER_ID."""
    tasks = (
        Task(user_id=user_id, title=f"Demo task {n}", priority=n % 5 + 1)
        for n in range(1, count + 1)
    )
    db.session.add_all(tasks)
    db.session.commit()
    click.echo(f"Created {count} tasks for {user_id}.")


@click.command("purge")
@with_appcontext
def purge() -> None:
    """Delete what has expired: Idempotency-Keys older than 24 hours and the change feed's
    tombstones older than TOMBSTONE_DAYS (safe to run from cron at any time)."""
    click.echo(f"Deleted {idempotency.purge_expired()} expired idempotency keys.")
    days = current_app.config["TOMBSTONE_DAYS"]
    purged = changes.purge_tombstones(days)
    click.echo(f"Deleted {purged} tombstones older than {days} days.")
