"""The TypeScript client (clients/typescript), for the tests that run it: where it is,
whether it is installed, and building it."""

from __future__ import annotations

import subprocess

from tests.better_auth import require_node
from tests.support import ROOT, unavailable

CLIENT_DIR = ROOT / "clients" / "typescript"


def require_client() -> None:
    """Skip on a laptop without Node.js or `npm ci`; in CI that is a failure instead."""
    require_node()
    if not (CLIENT_DIR / "node_modules" / "openapi-fetch").is_dir():
        unavailable(
            "TypeScript client tests",
            "run `npm ci --prefix clients/typescript` (make test does it when npm exists)",
        )


def build_client() -> None:
    """Compile src/ to dist/ now, so a test never runs an older build."""
    run = subprocess.run(
        ["npm", "run", "build", "--silent"],
        cwd=CLIENT_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, f"the client did not build:\n{run.stdout}\n{run.stderr}"
