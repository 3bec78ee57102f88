import os

# prometheus_client chooses where to keep its figures from this setting when it is
# first imported, which the test modules' imports of taskapp do before any fixture
# (tests/conftest.py's clean_environment) could remove it.
os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
