"""psycopg2: parameters, transactions, errors, cursor.description."""

import datetime
import math

import psycopg2
import psycopg2.errors
import pytest

from conftest import DISTRICT, WARD, WARD_NAME, WARDS_BEFORE_REFORM

TEXT, INT8, FLOAT8, DATE, TIMESTAMPTZ = 25, 20, 701, 1082, 1184


def test_server_reads_like_postgresql(dsn):
    with psycopg2.connect(dsn) as conn:
        assert conn.server_version >= 160000
        cur = conn.cursor()
        cur.execute("SELECT version()")
        assert cur.fetchone()[0].startswith("PostgreSQL 16")
        cur.execute("SELECT current_database(), current_schema()")
        assert cur.fetchone() == ("baocao", "public")


def test_parameters_of_every_common_type(dsn):
    with psycopg2.connect(dsn) as conn:
        cur = conn.cursor()
        cur.execute(
            "SELECT code, name FROM units WHERE code = %s AND version = %s",
            (WARD, datetime.date(2025, 1, 1)),
        )
        assert cur.fetchall() == [(WARD, WARD_NAME)]
        moment = datetime.datetime(2024, 8, 20, 17, 0, 0, 123456)
        cur.execute(
            "SELECT %s + 1, %s * 2, %s, %s, %s",
            (41, 1.25, "Hà Nội", datetime.date(2024, 2, 29), moment),
        )
        assert cur.fetchone() == (42, 2.5, "Hà Nội", datetime.date(2024, 2, 29), moment)


def test_count_of_real_wards(dsn):
    with psycopg2.connect(dsn) as conn:
        cur = conn.cursor()
        cur.execute(
            "SELECT count(*) FROM units WHERE level = %s AND version = %s",
            ("ward", "2025-01-01"),
        )
        assert cur.fetchone() == (WARDS_BEFORE_REFORM,)


def test_description_names_and_types(dsn):
    with psycopg2.connect(dsn) as conn:
        cur = conn.cursor()
        cur.execute(
            "SELECT unit_code, value, reporting_units, hierarchy_version, count(*) "
            "FROM rollup WHERE unit_code = %s AND period = %s AND indicator_code = %s "
            "GROUP BY 1, 2, 3, 4",
            (DISTRICT, "2025-06", "population"),
        )
        names = [d.name for d in cur.description]
        types = [d.type_code for d in cur.description]
        assert names == ["unit_code", "value", "reporting_units", "hierarchy_version", "count"]
        assert types == [TEXT, FLOAT8, INT8, DATE, INT8]
        unit, value, reporting, version, count = cur.fetchone()
        assert unit == DISTRICT and value > 0 and reporting > 0 and count == 1
        assert version == datetime.date(2025, 1, 1)


def test_rollup_equals_the_sum_of_its_wards(dsn):
    with psycopg2.connect(dsn) as conn:
        cur = conn.cursor()
        cur.execute(
            "SELECT sum(r.value) FROM reports r JOIN units u ON u.code = r.unit_code "
            "WHERE u.version = DATE '2025-01-01' AND u.parent_code = %s "
            "AND r.period = %s AND r.indicator_code = %s",
            (DISTRICT, "2025-06", "births"),
        )
        (wards,) = cur.fetchone()
        cur.execute(
            "SELECT value FROM rollup WHERE unit_code = %s AND period = %s AND indicator_code = %s",
            (DISTRICT, "2025-06", "births"),
        )
        assert cur.fetchone() == (wards,)


def test_commit_makes_an_insert_visible_and_rollback_discards_it(dsn):
    conn = psycopg2.connect(dsn)
    try:
        cur = conn.cursor()
        cur.execute(
            "INSERT INTO reports (unit_code, period, indicator_code, value) VALUES (%s, %s, %s, %s)",
            (WARD, "2025-06", "marriages", 7),
        )
        assert cur.rowcount == 1
        conn.rollback()
        cur.execute(
            "INSERT INTO reports (unit_code, period, indicator_code, value) VALUES (%s, %s, %s, %s)",
            (WARD, "2025-06", "births", 17),
        )
        conn.commit()
        cur.execute(
            "SELECT indicator_code, value, submitted_by FROM reports_history "
            "WHERE unit_code = %s AND period = %s AND indicator_code IN ('births', 'marriages') "
            "AND source = 'INSERT' ORDER BY 1",
            (WARD, "2025-06"),
        )
        assert cur.fetchall() == [("births", 17.0, conn.info.user)]
    finally:
        conn.close()


def test_errors_leave_the_connection_usable(dsn):
    conn = psycopg2.connect(dsn)
    try:
        cur = conn.cursor()
        with pytest.raises(psycopg2.errors.UndefinedTable):
            cur.execute("SELECT * FROM no_such_table")
        conn.rollback()
        with pytest.raises(psycopg2.IntegrityError) as refused:
            cur.execute(
                "INSERT INTO reports (unit_code, period, indicator_code, value) VALUES (%s, %s, %s, %s)",
                ("99999", "2025-06", "births", 1),
            )
        assert refused.value.pgcode == "23503"
        assert "99999" in refused.value.pgerror
        conn.rollback()
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
    finally:
        conn.close()


def test_special_floats_and_nulls(dsn):
    with psycopg2.connect(dsn) as conn:
        cur = conn.cursor()
        cur.execute(
            "SELECT CAST('Infinity' AS DOUBLE PRECISION), CAST(NULL AS TEXT), "
            "CAST(0.1 AS DOUBLE PRECISION) + CAST(0.2 AS DOUBLE PRECISION)"
        )
        inf, null, sum_ = cur.fetchone()
        assert math.isinf(inf) and inf > 0
        assert null is None
        assert sum_ == 0.1 + 0.2


def test_explicit_block_with_a_nested_begin(dsn):
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        cur = conn.cursor()
        cur.execute("BEGIN")
        cur.execute(
            "INSERT INTO reports (unit_code, period, indicator_code, value) VALUES (%s, %s, %s, %s)",
            (WARD, "2025-07", "deaths", 2),
        )
        # Ignored inside a block, as in PostgreSQL: the insert stays pending.
        cur.execute("BEGIN")
        other = psycopg2.connect(dsn)
        other.autocommit = True
        look = other.cursor()
        query = (
            "SELECT count(*) FROM reports_history WHERE unit_code = %s AND period = %s "
            "AND indicator_code = %s AND source = 'INSERT'"
        )
        look.execute(query, (WARD, "2025-07", "deaths"))
        assert look.fetchone() == (0,)
        cur.execute("COMMIT")
        look.execute(query, (WARD, "2025-07", "deaths"))
        assert look.fetchone() == (1,)
        other.close()
    finally:
        conn.close()
