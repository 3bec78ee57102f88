"""Entry point for gunicorn (`gunicorn wsgi:app`) and the `flask` command."""

from dotenv import find_dotenv, load_dotenv

load_dotenv(find_dotenv(usecwd=True))  # the .env of the working directory

import sys  # noqa: E402

from taskapp import create_app  # noqa: E402  (the environment must be loaded first)
from taskapp.config import ConfigError  # noqa: E402

try:
    app = create_app()
except ConfigError as error:
    # One line for the operator, not a traceback.
    sys.exit(f"taskapp: configuration error: {error}")
