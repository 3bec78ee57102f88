"""Entry point for gunicorn (`gunicorn wsgi:app`) and the `flask` command.

`python -m wsgi` only reads and checks the settings, exactly as the app would, and
builds nothing: gunicorn.conf.py runs it in the master before any worker starts.
"""

from dotenv import find_dotenv, load_dotenv

load_dotenv(find_dotenv(usecwd=True))  # the .env of the working directory

import sys  # noqa: E402

from flask import Flask  # noqa: E402

from taskapp import create_app  # noqa: E402  (the environment must be loaded first)
from taskapp.config import ConfigError, load_config  # noqa: E402

try:
    if __name__ == "__main__":
        # The instance folder create_app() would use (the development secret lives there).
        load_config(None, Flask("taskapp").instance_path)
    else:
        app = create_app()
except ConfigError as error:
    # One line for the operator, not a traceback.
    sys.exit(f"taskapp: configuration error: {error}")
