#!/usr/bin/env python3
"""Roll-up workload: baocao (through the Postgres protocol) against DuckDB
reading the same Parquet files of the same warehouse, with equivalent
hand-written SQL (latest correction wins, each indicator's own rules).

    benches/run-rollup-bench            # sets everything up and runs this

Arguments: WAREHOUSE_DIR PORT. Prints a Markdown table of medians.
"""
import statistics
import sys
import time

import duckdb
import psycopg

warehouse, port = sys.argv[1], sys.argv[2]
RUNS = 7
# The data files only: the Delta log's checkpoints are Parquet too.
files = f"{warehouse}/reports/period=*/*.parquet"
catalog = f"{warehouse}/catalog"

duck = duckdb.connect()
duck.execute("SET threads TO 2")
# The Delta log lists the live files; with no compaction or vacuum yet every
# data file is live, so reading them all is the same data.
duck.execute(f"""
CREATE VIEW history AS SELECT * FROM read_parquet('{files}', hive_partitioning = true);
CREATE VIEW latest AS SELECT * FROM history
  QUALIFY row_number() OVER (PARTITION BY unit_code, period, indicator_code ORDER BY submitted_at DESC, submission_id DESC) = 1;
CREATE TABLE ind AS SELECT * FROM read_csv('{catalog}/indicators.csv', header = true, all_varchar = true);
CREATE TABLE old_units AS SELECT * FROM read_csv('{catalog}/hierarchy/units_2025-01-01.csv', header = true, all_varchar = true);
""")

QUARTER = "2024Q3"
QUARTER_MONTHS = ("2024-07", "2024-08", "2024-09")

queries = {
    "a. city roll-up of every indicator, one quarter": (
        f"SELECT indicator_code, value FROM rollup WHERE unit_code = '01' AND period = '{QUARTER}'",
        f"""
        WITH src AS (
          SELECT l.unit_code, l.period, l.indicator_code, l.value, i.across_time
          FROM latest l JOIN ind i ON i.code = l.indicator_code
          WHERE l.period IN ('{QUARTER}', {", ".join(repr(m) for m in QUARTER_MONTHS)})
            AND (i.period_type = 'quarter' OR (i.period_type = 'month' AND i.across_time <> 'none'))
        ), per_unit AS (
          SELECT unit_code, indicator_code,
                 CASE any_value(across_time)
                   WHEN 'sum' THEN sum(value) WHEN 'last' THEN arg_max(value, period)
                   WHEN 'average' THEN avg(value) WHEN 'min' THEN min(value) WHEN 'max' THEN max(value)
                   ELSE any_value(value) END AS v
          FROM src GROUP BY unit_code, indicator_code
        ), rules AS (
          SELECT code, period_type, across_units, CAST(coalesce(nullif(scale, ''), '1') AS DOUBLE) AS scale,
                 split_part(split_part(across_units, ':', 2), '/', 1) AS num,
                 split_part(split_part(across_units, ':', 2), '/', 2) AS den
          FROM ind WHERE period_type IN ('month', 'quarter')
        )
        SELECT r.code, CASE
                 WHEN r.across_units = 'sum' THEN sum(p.v)
                 WHEN r.across_units = 'average' THEN avg(p.v)
                 WHEN r.across_units = 'min' THEN min(p.v)
                 WHEN r.across_units = 'max' THEN max(p.v)
                 WHEN r.across_units = 'count' THEN count(p.v) END AS value
        FROM rules r JOIN per_unit p ON p.indicator_code = r.code
        WHERE r.across_units IN ('sum', 'average', 'min', 'max', 'count')
        GROUP BY r.code, r.across_units
        UNION ALL
        SELECT r.code, r.scale * sum(n.v) / sum(d.v)
        FROM rules r JOIN per_unit n ON n.indicator_code = r.num
                     JOIN per_unit d ON d.indicator_code = r.den AND d.unit_code = n.unit_code
        WHERE r.across_units LIKE 'ratio:%'
        GROUP BY r.code, r.scale
        """,
    ),
    "b. 5-year monthly series of births, every district": (
        "SELECT unit_code, period, value FROM rollup WHERE indicator_code = 'births' AND unit_level = 'district' AND period_type = 'month'",
        """
        SELECT u.parent_code AS district, l.period, sum(l.value)
        FROM latest l JOIN old_units u ON u.code = l.unit_code AND u.level = 'ward'
        WHERE l.indicator_code = 'births' AND l.period < '2025-07' AND length(l.period) = 7
        GROUP BY 1, 2
        """,
    ),
    "c. completeness of every unit, one month": (
        "SELECT unit_code, expected, received, on_time FROM completeness WHERE period = '2025-06' AND form = 'ward_monthly'",
        """
        WITH expected AS (SELECT code, parent_code FROM old_units WHERE level = 'ward'),
        got AS (
          SELECT unit_code, min(submitted_at) AS first_at FROM history
          WHERE period = '2025-06' AND indicator_code IN (SELECT code FROM ind WHERE lowest_level = 'ward' AND period_type = 'month')
          GROUP BY unit_code
        ), status AS (
          SELECT e.code, e.parent_code, g.first_at IS NOT NULL AS received,
                 g.first_at IS NOT NULL AND CAST(g.first_at + INTERVAL 7 HOUR AS DATE) <= DATE '2025-07-20' AS on_time
          FROM expected e LEFT JOIN got g ON g.unit_code = e.code
        )
        SELECT code, 1, CAST(received AS INT), CAST(on_time AS INT) FROM status
        UNION ALL SELECT parent_code, count(*), count(*) FILTER (received), count(*) FILTER (on_time) FROM status GROUP BY parent_code
        UNION ALL SELECT '01', count(*), count(*) FILTER (received), count(*) FILTER (on_time) FROM status
        """,
    ),
    "d. one ward's full report, one month": (
        "SELECT indicator_code, value FROM reports WHERE unit_code = '00004' AND period = '2024-07'",
        "SELECT indicator_code, value FROM latest WHERE unit_code = '00004' AND period = '2024-07'",
    ),
}


def normalized(rows):
    """Rows as sorted tuples of text, numbers rounded: to compare engines."""
    def cell(v):
        if isinstance(v, (int, float)):
            return f"{float(v):.6f}"
        return str(v)
    return sorted(tuple(cell(v) for v in row) for row in rows)


def timed(run):
    run()  # warm-up
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        rows = run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000, rows


with psycopg.connect(f"host=127.0.0.1 port={port} dbname=baocao user=bench", autocommit=True) as pg:
    print("| query | baocao (ms) | DuckDB (ms) | rows | same result |")
    print("| --- | ---: | ---: | ---: | --- |")
    for name, (ours, theirs) in queries.items():
        ms_ours, rows_ours = timed(lambda: pg.execute(ours).fetchall())
        ms_duck, rows_duck = timed(lambda: duck.execute(theirs).fetchall())
        same = "yes" if normalized(rows_ours) == normalized(rows_duck) else "NO"
        print(f"| {name} | {ms_ours:.1f} | {ms_duck:.1f} | {len(rows_ours)} | {same} |")
