"""SQLAlchemy 2 (psycopg 2 and 3 dialects) and pandas."""

import pandas
import pytest
import sqlalchemy
from sqlalchemy import inspect, text

from conftest import DISTRICT, WARDS_BEFORE_REFORM

TABLES = {
    "reports",
    "reports_history",
    "rollup",
    "rollup_current",
    "units",
    "unit_ancestors",
    "unit_changes",
    "indicators",
    "periods",
    "report_forms",
    "report_status",
    "completeness",
}


@pytest.fixture(params=["postgresql+psycopg2", "postgresql+psycopg"])
def engine(request, url):
    engine = sqlalchemy.create_engine(f"{request.param}://{url}?sslmode=disable")
    yield engine
    engine.dispose()


def test_connect_runs_the_dialect_start_up(engine):
    with engine.connect() as conn:
        assert engine.dialect.server_version_info[0] == 16
        assert conn.execute(text("SELECT current_schema()")).scalar() == "public"


def test_inspector_lists_tables_and_columns(engine):
    inspector = inspect(engine)
    assert "public" in inspector.get_schema_names()
    tables = set(inspector.get_table_names()) | set(inspector.get_view_names())
    assert TABLES <= tables, TABLES - tables
    columns = {c["name"]: c for c in inspector.get_columns("reports")}
    assert list(columns)[:4] == ["unit_code", "period", "indicator_code", "value"]
    assert isinstance(columns["value"]["type"], sqlalchemy.types.Float)
    assert isinstance(columns["unit_code"]["type"], sqlalchemy.types.String)
    assert columns["unit_code"]["nullable"] is False
    assert isinstance(columns["submitted_at"]["type"], sqlalchemy.types.TIMESTAMP)
    rollup = {c["name"] for c in inspector.get_columns("rollup")}
    assert {"unit_code", "unit_level", "period", "period_type", "indicator_code", "value",
            "reporting_units", "expected_units"} <= rollup


def test_pandas_read_sql(engine):
    frame = pandas.read_sql(
        text(
            "SELECT unit_code, period, value, reporting_units FROM rollup "
            "WHERE unit_code = :unit AND indicator_code = :indicator AND period_type = 'month' "
            "ORDER BY period"
        ),
        engine,
        params={"unit": DISTRICT, "indicator": "population"},
    )
    assert list(frame.columns) == ["unit_code", "period", "value", "reporting_units"]
    assert list(frame["period"]) == ["2025-05", "2025-06"]
    assert str(frame["value"].dtype) == "float64"
    assert str(frame["reporting_units"].dtype) == "int64"
    assert (frame["value"] > 0).all()


def test_pandas_reads_a_whole_table(engine):
    frame = pandas.read_sql("SELECT * FROM units", engine)
    assert list(frame.columns)[:4] == ["code", "name", "level", "parent_code"]
    wards = frame[(frame["level"] == "ward") & (frame["version"].astype(str) == "2025-01-01")]
    assert len(wards) == WARDS_BEFORE_REFORM
