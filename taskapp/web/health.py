"""Health endpoints for load balancers and orchestrators."""

from flask import Blueprint
from sqlalchemy import text

from taskapp.auth.tokens import key_server_ready
from taskapp.extensions import db
from taskapp.web import ratelimit
from taskapp.web.errors import ServiceUnavailable

blp = Blueprint("health", __name__)


# Never rate limited: answering costs less than counting would (no storage round
# trip), and a liveness probe refused because its address is flooded would get a
# healthy process restarted.
@blp.get("/healthz")
@ratelimit.exempt
def alive() -> dict[str, str]:
    """The process serves requests; touches nothing else."""
    return {"status": "ok"}


# Counted against the client IP's limit like any request: it queries the database.
# Frequent probers are exempted by address (RATELIMIT_EXEMPT_ADDRESSES).
@blp.get("/readyz")
def ready() -> dict[str, str]:
    """The database answers and the signing keys can be had; 503 otherwise."""
    db.session.execute(text("SELECT 1"))
    if not key_server_ready():
        raise ServiceUnavailable("key server unreachable and no keys cached")
    return {"status": "ready"}
