"""asyncpg: the extended protocol with binary encoding throughout."""

import asyncio
import datetime
import decimal

import asyncpg

from conftest import DATABASE, DISTRICT, HOST, PORT, USER, WARD, WARD_NAME


def run(coro):
    return asyncio.run(coro)


async def connect():
    return await asyncpg.connect(host=HOST, port=PORT, user=USER, database=DATABASE, ssl=False)


def test_types_round_trip_in_binary():
    async def main():
        conn = await connect()
        try:
            moment = datetime.datetime(2024, 8, 20, 17, 0, 0, 123456)
            aware = datetime.datetime(2024, 8, 20, 10, 0, 0, 654321, tzinfo=datetime.timezone.utc)
            row = await conn.fetchrow(
                "SELECT $1::bigint AS i, $2::double precision AS f, $3::text AS t, $4::boolean AS b, "
                "$5::date AS d, $6::timestamp AS ts, $7::timestamptz AS tz, "
                "CAST(12.50 AS NUMERIC(10, 2)) AS n, CAST(NULL AS BIGINT) AS missing",
                9007199254740993,
                0.1,
                "Hoàn Kiếm",
                True,
                datetime.date(2025, 7, 1),
                moment,
                aware,
            )
            assert row["i"] == 9007199254740993
            assert row["f"] == 0.1
            assert row["t"] == "Hoàn Kiếm"
            assert row["b"] is True
            assert row["d"] == datetime.date(2025, 7, 1)
            assert row["ts"] == moment
            assert row["tz"] == aware
            assert row["n"] == decimal.Decimal("12.50")
            assert row["missing"] is None
        finally:
            await conn.close()

    run(main())


def test_prepared_statement_reused_with_parameters():
    async def main():
        conn = await connect()
        try:
            stmt = await conn.prepare(
                "SELECT code, name, level FROM units WHERE code = $1 AND version = $2"
            )
            assert [a.name for a in stmt.get_attributes()] == ["code", "name", "level"]
            assert [t.name for t in stmt.get_parameters()] == ["text", "date"]
            row = await stmt.fetchrow(WARD, datetime.date(2025, 1, 1))
            assert tuple(row) == (WARD, WARD_NAME, "ward")
            row = await stmt.fetchrow(DISTRICT, datetime.date(2025, 1, 1))
            assert tuple(row) == (DISTRICT, "Quận Ba Đình", "district")
            assert await stmt.fetchrow("nope", datetime.date(2025, 1, 1)) is None
        finally:
            await conn.close()

    run(main())


def test_rollup_through_parameters():
    async def main():
        conn = await connect()
        try:
            wards = await conn.fetchval(
                "SELECT count(*) FROM units WHERE parent_code = $1 AND version = $2",
                DISTRICT,
                datetime.date(2025, 1, 1),
            )
            row = await conn.fetchrow(
                "SELECT value, reporting_units, expected_units FROM rollup "
                "WHERE unit_code = $1 AND period = $2 AND indicator_code = $3",
                DISTRICT,
                "2025-06",
                "population",
            )
            assert row["expected_units"] == wards
            assert 0 < row["reporting_units"] <= wards
            assert row["value"] > 0
            limited = await conn.fetch(
                "SELECT code FROM units WHERE version = $1 ORDER BY code LIMIT $2",
                datetime.date(2025, 7, 1),
                3,
            )
            assert [r["code"] for r in limited] == ["00004", "00008", "00025"]
        finally:
            await conn.close()

    run(main())


def test_insert_with_parameters_and_transaction():
    async def main():
        conn = await connect()
        try:
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO reports (unit_code, period, indicator_code, value) VALUES ($1, $2, $3, $4)",
                    WARD,
                    "2025-04",
                    "births",
                    21.0,
                )
            value = await conn.fetchval(
                "SELECT value FROM reports WHERE unit_code = $1 AND period = $2 AND indicator_code = $3",
                WARD,
                "2025-04",
                "births",
            )
            assert value == 21.0
            try:
                await conn.execute(
                    "INSERT INTO reports (unit_code, period, indicator_code, value) VALUES ($1, $2, $3, $4)",
                    WARD,
                    "2025-04",
                    "no_such_indicator",
                    1.0,
                )
                raise AssertionError("an unknown indicator was accepted")
            except asyncpg.PostgresError as e:
                assert e.sqlstate.startswith("23") or e.sqlstate.startswith("22")
                assert "no_such_indicator" in str(e)
            assert await conn.fetchval("SELECT 1") == 1
        finally:
            await conn.close()

    run(main())


def test_type_introspection():
    """asyncpg's own pg_catalog introspection, as it runs it for a type it
    has no built-in codec for (here int4[]: asyncpg builds array codecs from
    what the introspection tells it)."""

    async def main():
        conn = await connect()
        try:
            types, _ = await conn._introspect_types([25, 701, 1007], 60)
            by_oid = {t["oid"]: t for t in types}
            assert by_oid[25]["name"] == "text"
            assert by_oid[701]["name"] == "float8"
            assert by_oid[1007]["name"] == "_int4"
            assert by_oid[1007]["elemtype"] == 23
            assert by_oid[23]["name"] == "int4"
            # And a query returning an int4[] decodes through it.
            value = await conn.fetchval("SELECT make_array(CAST(1 AS INT), CAST(2 AS INT))")
            assert value == [1, 2]
        finally:
            await conn.close()

    run(main())
