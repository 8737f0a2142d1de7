"""Shared settings of the Python client tests.

tests/e2e/clients.rs starts a baocao server over a demo warehouse and runs
pytest on these files with the standard libpq variables set (PGHOST, PGPORT,
PGUSER, PGDATABASE), which every client library here reads.
"""

import os

import pytest

HOST = os.environ.get("PGHOST", "127.0.0.1")
PORT = int(os.environ.get("PGPORT", "5432"))
USER = os.environ.get("PGUSER", "analyst")
DATABASE = os.environ.get("PGDATABASE", "baocao")

# Real Hanoi units (catalog/data/hierarchy): a ward of Ba Dinh district before
# the 2025 reform, and the district itself.
WARD = "00004"
WARD_NAME = "Phường Trúc Bạch"
DISTRICT = "001"
DISTRICT_NAME = "Quận Ba Đình"
CITY = "01"
CITY_NAME = "Thành phố Hà Nội"
WARDS_BEFORE_REFORM = 526
WARDS_AFTER_REFORM = 126


@pytest.fixture
def dsn():
    return f"host={HOST} port={PORT} user={USER} dbname={DATABASE} sslmode=disable"


@pytest.fixture
def url():
    return f"{USER}@{HOST}:{PORT}/{DATABASE}"
