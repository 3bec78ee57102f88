"""Entry point for gunicorn (`gunicorn wsgi:app`) and the `flask` command."""

from dotenv import load_dotenv

load_dotenv()

from taskapp import create_app  # noqa: E402  (the environment must be loaded first)

app = create_app()
