"""psycopg 3: server-side prepared statements, binary results, types."""

import datetime

import psycopg
import pytest

from conftest import CITY, CITY_NAME, DISTRICT, WARD, WARDS_AFTER_REFORM


def test_prepared_statements_are_reused(dsn):
    with psycopg.connect(dsn, autocommit=True) as conn:
        query = "SELECT name FROM units WHERE code = %s AND version = %s"
        for _ in range(3):
            row = conn.execute(query, (CITY, datetime.date(2025, 7, 1)), prepare=True).fetchone()
            assert row == (CITY_NAME,)
        cur = conn.execute(
            "SELECT count(*) FROM units WHERE level = %s AND version = %s",
            ("ward", datetime.date(2025, 7, 1)),
            prepare=True,
        )
        assert cur.fetchone() == (WARDS_AFTER_REFORM,)


def test_binary_results_round_trip(dsn):
    moment = datetime.datetime(2024, 8, 20, 17, 0, 0, 123456)
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.cursor(binary=True)
        cur.execute(
            "SELECT %s::bigint, %s::double precision, %s::text, %s::date, %s::timestamp, "
            "CAST(NULL AS BIGINT), true",
            (9007199254740993, 0.1, "Đống Đa", datetime.date(2025, 7, 1), moment),
        )
        assert cur.fetchone() == (
            9007199254740993,
            0.1,
            "Đống Đa",
            datetime.date(2025, 7, 1),
            moment,
            None,
            True,
        )
        assert cur.pgresult.fformat(0) == 1  # binary


def test_binary_results_from_the_warehouse(dsn):
    with psycopg.connect(dsn, autocommit=True) as conn:
        text = conn.execute(
            "SELECT unit_code, period, value, reporting_units, expected_units FROM rollup "
            "WHERE unit_code = %s AND period = %s AND indicator_code = %s",
            (DISTRICT, "2025Q2", "births"),
        ).fetchall()
        cur = conn.cursor(binary=True)
        cur.execute(
            "SELECT unit_code, period, value, reporting_units, expected_units FROM rollup "
            "WHERE unit_code = %s AND period = %s AND indicator_code = %s",
            (DISTRICT, "2025Q2", "births"),
        )
        binary = cur.fetchall()
        assert len(text) == 1 and text == binary
        assert [c.name for c in cur.description] == [
            "unit_code",
            "period",
            "value",
            "reporting_units",
            "expected_units",
        ]


def test_transaction_rollback_then_deallocate(dsn):
    # psycopg 3 sends DEALLOCATE ALL after a rollback when it prepared statements.
    with psycopg.connect(dsn) as conn:
        conn.execute("SELECT 1", prepare=True)
        conn.rollback()
        conn.execute("DEALLOCATE ALL")
        assert conn.execute("SELECT 2", prepare=True).fetchone() == (2,)


def test_insert_in_a_transaction_commits_atomically(dsn):
    with psycopg.connect(dsn) as conn:
        with conn.transaction():
            conn.execute(
                "INSERT INTO reports (unit_code, period, indicator_code, value) VALUES (%s, %s, %s, %s)",
                (WARD, "2025-05", "deaths", 3),
            )
            conn.execute(
                "INSERT INTO reports (unit_code, period, indicator_code, value) VALUES (%s, %s, %s, %s)",
                (WARD, "2025-05", "marriages", 4),
            )
        rows = conn.execute(
            "SELECT indicator_code, value, count(*) OVER (PARTITION BY submission_id) FROM reports_history "
            "WHERE unit_code = %s AND period = %s AND indicator_code IN ('deaths', 'marriages') "
            "AND source = 'INSERT' ORDER BY 1",
            (WARD, "2025-05"),
        ).fetchall()
        # One commit, one submission for the two statements.
        assert rows == [("deaths", 3.0, 2), ("marriages", 4.0, 2)]


def test_refused_statement_names_the_row(dsn):
    with psycopg.connect(dsn, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.DataError) as refused:
            conn.execute(
                "INSERT INTO reports (unit_code, period, indicator_code, value) VALUES (%s, %s, %s, %s)",
                (WARD, "2025-06", "births", -5),
            )
        assert refused.value.sqlstate.startswith("22")
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_session_commands(dsn):
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET application_name = 'baocao-tests'")
        assert conn.execute("SHOW application_name").fetchone() == ("baocao-tests",)
        conn.execute("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED")
        assert conn.execute("SHOW transaction_isolation").fetchone() == ("read committed",)
        assert conn.execute("SELECT current_setting('server_version_num')").fetchone()[0] >= "160000"
        assert conn.execute("SELECT set_config('search_path', 'public', false)").fetchone() == ("public",)
        assert conn.execute("SELECT pg_backend_pid()").fetchone()[0] > 0
        assert conn.execute("SELECT has_table_privilege('reports', 'SELECT')").fetchone() == (True,)
        assert conn.execute("SELECT 'reports'::regclass::oid").fetchone()[0] > 0
        assert conn.execute("SELECT current_schemas(false)").fetchone() == (["public"],)
        conn.execute("DISCARD ALL")
        assert conn.execute(
            "SELECT code FROM units WHERE version = DATE '2025-07-01' ORDER BY code LIMIT %s", (2,)
        ).fetchall() == [("00004",), ("00008",)]
