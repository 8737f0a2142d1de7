"""The start-up and introspection queries BI tools send (Metabase, Grafana,
DBeaver, Superset, Power BI/Npgsql), as collected with their sources in
tests/clients/bi_queries.sql. Each must run without an error; those marked
`expect: rows` must return rows, and every query's result is checked to
mention the warehouse's tables where it lists tables or columns."""

import pathlib
import re

import psycopg
import pytest

QUERIES = pathlib.Path(__file__).parent.parent / "bi_queries.sql"


def load():
    blocks = []
    for block in re.split(r"\n\s*\n(?=-- name:)", QUERIES.read_text(encoding="utf-8")):
        meta = dict(re.findall(r"^-- (name|source|expect|contains): *(.*)$", block, re.M))
        sql = "\n".join(l for l in block.splitlines() if not l.startswith("--")).strip()
        if sql:
            blocks.append((meta, sql.rstrip(";")))
    return blocks


@pytest.mark.parametrize("meta,sql", load(), ids=lambda v: v.get("name", "") if isinstance(v, dict) else "")
def test_query_runs(dsn, meta, sql):
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            cur = conn.execute(sql)
            # SET, DISCARD and the like return no result set.
            rows = cur.fetchall() if cur.description is not None else []
        except psycopg.Error as e:
            pytest.fail(f"{meta.get('name')} ({meta.get('source')}): {e}")
        if meta.get("expect", "rows") == "rows":
            assert rows, f"{meta.get('name')} returned no rows"
        if "contains" in meta:
            flat = {str(v) for row in rows for v in row}
            for want in meta["contains"].split(","):
                assert want.strip() in flat, f"{meta.get('name')}: {want.strip()} not in the result"
