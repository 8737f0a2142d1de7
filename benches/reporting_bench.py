#!/usr/bin/env python3
"""The reporting benchmark: eight queries a city analyst runs, on baocao
(through the Postgres protocol), DuckDB (in-process, reading the same rows
as Parquet) and PostgreSQL 15 (the same rows loaded with COPY, indexed),
each engine's answers checked equal before any time counts.

    benches/run-reporting-bench [hanoi|vn]    # sets everything up and runs this

Sub-commands, run by the runner:

    prepare WORK                     the peers' files from WORK/values.csv and
                                     the warehouse's catalog
    load-postgres WORK PGPORT        the peers' rows into PostgreSQL
    run WORK PORT PGPORT PID         the workload; writes WORK/results.md

Every engine reads the same rows: each submission with its time, corrections
included; "the latest submission of a value wins" is computed by each query,
as each engine's users would write it.
"""
import csv
import json
import os
import statistics
import sys
import time

import duckdb
import psycopg

RUNS = int(os.environ.get("RUNS", "7"))
# QUERIES="Q1 Q7": only these (all when empty).
QUERIES = os.environ.get("QUERIES", "").split()
COMMIT_TO_VISIBLE = int(os.environ.get("COMMIT_TO_VISIBLE", "100"))

# The workload's parameters: 2024 and its second quarter, Ba Đình, the
# Hanoi city, births (a flow), household size (population / households).
YEAR, PREVIOUS_YEAR = "2024", "2023"
QUARTER, QUARTER_MONTHS = "2024Q2", ("2024-04", "2024-05", "2024-06")
MONTH = "2024-06"
DISTRICT = "001"
CITY = "01"
FLOW = "births"
RATIO, NUMERATOR, DENOMINATOR = "household_size", "population", "households"


def catalog(work):
    return os.path.join(work, "warehouse", "catalog")


def months_of(work):
    with open(os.path.join(work, "months.json")) as f:
        return json.load(f)


# ---------------------------------------------------------------- prepare


def prepare(work):
    """reports.parquet (every submitted row, sorted by period and unit:
    DuckDB's best layout), latest.csv (the latest values, for the ingest
    figures), wards.csv and indicators.csv (the catalog's hierarchy and
    rules, as a peer's dimension tables)."""
    cat = catalog(work)
    wards = []
    with open(os.path.join(cat, "hierarchy", "units_2025-01-01.csv")) as f:
        units = {r["code"]: r for r in csv.DictReader(f)}
    for code, u in units.items():
        if u["level"] == "ward":
            district = units[u["parent_code"]]
            wards.append((code, district["code"], district["parent_code"]))
    with open(os.path.join(work, "wards.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ward_code", "district_code", "province_code"])
        w.writerows(sorted(wards))
    with open(os.path.join(cat, "indicators.csv")) as f:
        rows = [r for r in csv.DictReader(f) if r["lowest_level"] == "ward" and r["period_type"] == "month"]
    with open(os.path.join(work, "indicators.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["code", "across_units", "across_time", "scale", "numerator", "denominator"])
        for r in rows:
            rule, _, parts = r["across_units"].partition(":")
            num, _, den = parts.partition("/") if rule == "ratio" else ("", "", "")
            w.writerow([r["code"], rule, r["across_time"], r["scale"] or "1", num, den])
    duck = duckdb.connect()
    values = os.path.join(work, "values.csv")
    duck.execute(f"""
        CREATE VIEW submitted AS SELECT * FROM read_csv('{values}', header = true,
          columns = {{'unit_code': 'VARCHAR', 'period': 'VARCHAR', 'indicator_code': 'VARCHAR',
                      'value': 'DOUBLE', 'submitted_at': 'TIMESTAMPTZ'}})""")
    print("writing reports.parquet", file=sys.stderr)
    duck.execute(f"COPY (SELECT * FROM submitted ORDER BY period, unit_code, indicator_code, submitted_at) "
                 f"TO '{work}/reports.parquet' (FORMAT parquet)")
    print("writing latest.csv", file=sys.stderr)
    duck.execute(f"""COPY (SELECT unit_code, period, indicator_code, arg_max(value, submitted_at) AS value
                          FROM submitted GROUP BY ALL ORDER BY period, unit_code, indicator_code)
                     TO '{work}/latest.csv' (HEADER)""")
    months = [r[0] for r in duck.execute("SELECT DISTINCT period FROM submitted ORDER BY 1").fetchall()]
    with open(os.path.join(work, "months.json"), "w") as f:
        json.dump(months, f)


# ----------------------------------------------------------- PostgreSQL

PG_SCHEMA = """
DROP TABLE IF EXISTS reports, wards, indicators;
CREATE TABLE reports (
    unit_code text NOT NULL,
    period text NOT NULL,
    indicator_code text NOT NULL,
    value double precision NOT NULL,
    submitted_at timestamptz NOT NULL
);
CREATE TABLE wards (ward_code text PRIMARY KEY, district_code text NOT NULL, province_code text NOT NULL);
CREATE TABLE indicators (code text PRIMARY KEY, across_units text, across_time text,
                         scale double precision, numerator text, denominator text);
"""

# The latest-submission look-up (DISTINCT ON walks it in order), and a
# second way in for one indicator's series.
PG_INDEXES = """
CREATE INDEX reports_key ON reports (period, unit_code, indicator_code, submitted_at DESC);
CREATE INDEX reports_indicator ON reports (indicator_code, period);
CREATE INDEX wards_district ON wards (district_code);
ANALYZE;
"""


def pg_connect(pgport):
    return psycopg.connect(f"host=127.0.0.1 port={pgport} dbname=postgres user=postgres", autocommit=True)


def copy_file(conn, table, path):
    with conn.cursor() as cur, open(path, "rb") as f:
        with cur.copy(f"COPY {table} FROM STDIN WITH (FORMAT csv, HEADER)") as cp:
            while chunk := f.read(1 << 20):
                cp.write(chunk)


def load_postgres(work, pgport):
    with pg_connect(pgport) as conn:
        conn.execute(PG_SCHEMA)
        print("loading PostgreSQL", file=sys.stderr)
        start = time.perf_counter()
        copy_file(conn, "reports", os.path.join(work, "values.csv"))
        copy_file(conn, "wards", os.path.join(work, "wards.csv"))
        copy_file(conn, "indicators", os.path.join(work, "indicators.csv"))
        conn.execute(PG_INDEXES)
        print(f"PostgreSQL loaded and indexed in {time.perf_counter() - start:.1f} s", file=sys.stderr)


# ------------------------------------------------------------- queries


def in_list(values):
    return ", ".join(f"'{v}'" for v in values)


def workload(months, sums, ward):
    """{name: (baocao SQL, DuckDB SQL, PostgreSQL SQL)}: the same answer, each
    in its engine's idiom. baocao's roll-up tables apply each indicator's
    rules; the peers spell them out."""
    first, last = months[0], months[-1]
    sums = in_list(sums)

    # The latest submission of each value, in each peer's idiom.
    def duck_latest(where, keys="unit_code, period, indicator_code"):
        return f"SELECT {keys}, arg_max(value, submitted_at) AS value FROM reports WHERE {where} GROUP BY {keys}"

    def pg_latest(where, keys="unit_code, period, indicator_code"):
        return (f"SELECT DISTINCT ON (period, unit_code, indicator_code) {keys}, value FROM reports "
                f"WHERE {where} ORDER BY period, unit_code, indicator_code, submitted_at DESC")

    def both(make):
        return make(duck_latest, "arg_max(l.value, l.period)"), make(pg_latest, "(array_agg(l.value ORDER BY l.period DESC))[1]")

    q = {}
    q["Q1 city monthly totals of one indicator, one year"] = (
        f"""SELECT period, value FROM rollup
            WHERE unit_code = '{CITY}' AND indicator_code = '{FLOW}' AND period_type = 'month'
              AND period >= '{YEAR}-01' AND period <= '{YEAR}-12'""",
        *both(lambda latest, _: f"""
            WITH l AS ({latest(f"indicator_code = '{FLOW}' AND period BETWEEN '{YEAR}-01' AND '{YEAR}-12'")})
            SELECT l.period, sum(l.value) FROM l JOIN wards w ON w.ward_code = l.unit_code
            WHERE w.province_code = '{CITY}' GROUP BY l.period"""),
    )
    q["Q2 GROUP BY ROLLUP district, ward of every sum-indicator, one quarter"] = (
        f"""SELECT unit_code, indicator_code, value FROM rollup
            WHERE period = '{QUARTER}' AND indicator_code IN ({sums})""",
        *both(lambda latest, last_value: f"""
            WITH l AS ({latest(f"period IN ({in_list(QUARTER_MONTHS)}) AND indicator_code IN ({sums})")}),
            per_ward AS (
              SELECT l.unit_code, l.indicator_code,
                     CASE WHEN i.across_time = 'last' THEN {last_value} ELSE sum(l.value) END AS value
              FROM l JOIN indicators i ON i.code = l.indicator_code
              GROUP BY l.unit_code, l.indicator_code, i.across_time)
            SELECT coalesce(w.ward_code, w.district_code, w.province_code), p.indicator_code, sum(p.value)
            FROM per_ward p JOIN wards w ON w.ward_code = p.unit_code
            GROUP BY p.indicator_code, w.province_code, ROLLUP (w.district_code, w.ward_code)"""),
    )
    q["Q3 top-10 wards of a district, one indicator, one month"] = (
        f"""SELECT r.unit_code, r.value FROM reports r
            JOIN units u ON u.code = r.unit_code AND u.valid_from IS NULL
            WHERE u.district_code = '{DISTRICT}' AND r.period = '{MONTH}' AND r.indicator_code = '{FLOW}'
            ORDER BY r.value DESC, r.unit_code LIMIT 10""",
        *both(lambda latest, _: f"""
            WITH l AS ({latest(f"period = '{MONTH}' AND indicator_code = '{FLOW}'")})
            SELECT l.unit_code, l.value FROM l JOIN wards w ON w.ward_code = l.unit_code
            WHERE w.district_code = '{DISTRICT}' ORDER BY l.value DESC, l.unit_code LIMIT 10"""),
    )
    q["Q4 completeness per district per month"] = (
        f"""SELECT unit_code, period, expected, received FROM completeness
            WHERE unit_level = 'district' AND form = 'ward_monthly'
              AND period >= '{first}' AND period <= '{last}'""",
        *([f"""
            WITH received AS (
              SELECT w.district_code, r.period, count(DISTINCT r.unit_code) AS received
              FROM reports r JOIN wards w ON w.ward_code = r.unit_code GROUP BY w.district_code, r.period),
            expected AS (SELECT district_code, count(*) AS expected FROM wards GROUP BY district_code)
            SELECT r.district_code, r.period, e.expected, r.received
            FROM received r JOIN expected e ON e.district_code = r.district_code"""] * 2),
    )
    q["Q5 year-over-year growth of one indicator per district"] = (
        f"""SELECT a.unit_code, 100 * (a.value / b.value - 1) AS growth
            FROM rollup a JOIN rollup b ON b.unit_code = a.unit_code
            WHERE a.unit_level = 'district' AND a.indicator_code = '{FLOW}' AND a.period = '{YEAR}'
              AND b.unit_level = 'district' AND b.indicator_code = '{FLOW}' AND b.period = '{PREVIOUS_YEAR}'""",
        *both(lambda latest, _: f"""
            WITH l AS ({latest(f"indicator_code = '{FLOW}' AND period BETWEEN '{PREVIOUS_YEAR}-01' AND '{YEAR}-12'")}),
            y AS (SELECT w.district_code, substr(l.period, 1, 4) AS year, sum(l.value) AS value
                  FROM l JOIN wards w ON w.ward_code = l.unit_code GROUP BY 1, 2)
            SELECT a.district_code, 100 * (a.value / b.value - 1)
            FROM y a JOIN y b ON b.district_code = a.district_code
            WHERE a.year = '{YEAR}' AND b.year = '{PREVIOUS_YEAR}'"""),
    )
    q["Q6 ratio indicator to districts, Σ numerator / Σ denominator"] = (
        f"""SELECT unit_code, value FROM rollup
            WHERE unit_level = 'district' AND period = '{MONTH}' AND indicator_code = '{RATIO}'""",
        *both(lambda latest, _: f"""
            WITH l AS ({latest(f"period = '{MONTH}' AND indicator_code IN ('{NUMERATOR}', '{DENOMINATOR}')")}),
            per_ward AS (
              SELECT unit_code, max(CASE WHEN indicator_code = '{NUMERATOR}' THEN value END) AS n,
                     max(CASE WHEN indicator_code = '{DENOMINATOR}' THEN value END) AS d
              FROM l GROUP BY unit_code)
            SELECT w.district_code, (SELECT scale FROM indicators WHERE code = '{RATIO}') * sum(p.n) / sum(p.d)
            FROM per_ward p JOIN wards w ON w.ward_code = p.unit_code
            WHERE p.n IS NOT NULL AND p.d IS NOT NULL GROUP BY w.district_code"""),
    )
    q["Q7 one ward's full report, one month"] = (
        f"SELECT indicator_code, value FROM reports WHERE unit_code = '{ward}' AND period = '{MONTH}'",
        *both(lambda latest, _: f"""
            SELECT indicator_code, value FROM ({latest(f"unit_code = '{ward}' AND period = '{MONTH}'")}) l"""),
    )
    q["Q8 every indicator × district × month"] = (
        f"""SELECT unit_code, period, indicator_code, value FROM rollup
            WHERE unit_level = 'district' AND period_type = 'month'
              AND period >= '{first}' AND period <= '{last}'""",
        *both(lambda latest, _: f"""
            WITH l AS ({latest("true")}),
            j AS (SELECT w.district_code, l.unit_code, l.period, l.indicator_code, l.value
                  FROM l JOIN wards w ON w.ward_code = l.unit_code),
            sums AS (
              SELECT j.district_code, j.period, j.indicator_code, sum(j.value) AS value
              FROM j JOIN indicators i ON i.code = j.indicator_code AND i.across_units = 'sum'
              GROUP BY j.district_code, j.period, j.indicator_code),
            -- Each ward's numerator and denominator side by side, from one
            -- pass over the latest values (a self-join of them ran DuckDB
            -- out of memory at vn scale).
            pairs AS (
              SELECT j.district_code, j.unit_code, j.period, i.code, i.scale,
                     max(CASE WHEN j.indicator_code = i.numerator THEN j.value END) AS n,
                     max(CASE WHEN j.indicator_code = i.denominator THEN j.value END) AS d
              FROM j JOIN indicators i ON i.across_units = 'ratio'
                AND (j.indicator_code = i.numerator OR j.indicator_code = i.denominator)
              GROUP BY j.district_code, j.unit_code, j.period, i.code, i.scale),
            ratios AS (
              SELECT district_code, period, code AS indicator_code, scale * sum(n) / sum(d) AS value
              FROM pairs WHERE n IS NOT NULL AND d IS NOT NULL
              GROUP BY district_code, period, code, scale)
            SELECT * FROM sums UNION ALL SELECT * FROM ratios"""),
    )
    return q


# ------------------------------------------------------------- checking


def normalise(rows):
    """Rows as tuples of text and floats, in a canonical order."""
    out = []
    for r in rows:
        out.append(tuple(float(v) if isinstance(v, (int, float)) or type(v).__name__ == "Decimal" else v for v in r))
    def key(v):
        if v is None:
            return (2, "", 0.0)
        return (0, v, 0.0) if isinstance(v, str) else (1, "", round(v, 6))

    return sorted(out, key=lambda r: tuple(key(v) for v in r))


def close(a, b):
    """Floats agree to a millionth (baocao's roll-up rounds to one) or to
    the last digits (the engines add in different orders)."""
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= max(1e-6, 1e-9 * max(abs(a), abs(b)))
    return a == b


def same(a, b):
    return len(a) == len(b) and all(len(x) == len(y) and all(close(u, v) for u, v in zip(x, y)) for x, y in zip(a, b))


def difference(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if not (len(x) == len(y) and all(close(u, v) for u, v in zip(x, y))):
            return f"row {i}: {x} vs {y}"
    return f"{len(a)} rows vs {len(b)}"


# ------------------------------------------------------------- running


class Engine:
    def __init__(self, name, run):
        self.name = name
        self.run = run


def psql_engine(name, conn):
    def run(sql):
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()
    return Engine(name, run)


def duck_engine(work):
    duck = duckdb.connect()
    duck.execute("SET threads TO 2")
    # Its default, 80% of the machine, is more than it may take beside the
    # server and this script's copies of the answers: at vn scale Q8 went
    # past it and the kernel killed the run. Past the limit it spills.
    duck.execute("SET memory_limit = '10GB'")
    duck.execute(f"SET temp_directory = '{work}/duckdb.tmp'")
    duck.execute(f"""
        CREATE VIEW reports AS SELECT * FROM read_parquet('{work}/reports.parquet');
        CREATE TABLE wards AS SELECT * FROM read_csv('{work}/wards.csv', header = true, all_varchar = true);
        CREATE TABLE indicators AS SELECT code, across_units, across_time, CAST(scale AS DOUBLE) AS scale,
               numerator, denominator FROM read_csv('{work}/indicators.csv', header = true, all_varchar = true);
    """)
    return Engine("DuckDB", lambda sql: duck.execute(sql).fetchall()), duck


def timed(engine, sql):
    start = time.perf_counter()
    rows = engine.run(sql)
    return time.perf_counter() - start, rows


def memory(pid):
    """The server's resident and peak resident memory, in MiB."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def commit_to_visible(port, wards, months):
    """INSERT a corrected value on one connection; poll another (every 2 ms)
    until it reads it. Returns (acknowledged, visible) latencies in seconds."""
    writer = psycopg.connect(f"host=127.0.0.1 port={port} dbname=baocao user=bench", autocommit=True)
    reader = psycopg.connect(f"host=127.0.0.1 port={port} dbname=baocao user=bench", autocommit=True)
    # The month before the workload's first: no query of the workload reads
    # it, so the peers' answers stay the same, and a rerun still measures
    # (each value is new).
    first = months[0]
    year, month = int(first[:4]), int(first[5:])
    period = f"{year - (month == 1)}-{12 if month == 1 else month - 1:02}"
    base = reader.execute("SELECT coalesce(max(value), 0) FROM reports WHERE period = %s AND indicator_code = %s",
                          (period, FLOW)).fetchone()[0] + 1
    acks, seen = [], []
    for i in range(COMMIT_TO_VISIBLE):
        ward = wards[i % len(wards)]
        value = float(base + i)
        start = time.perf_counter()
        writer.execute("INSERT INTO reports (unit_code, period, indicator_code, value) VALUES (%s, %s, %s, %s)",
                       (ward, period, FLOW, value))
        acked = time.perf_counter()
        while True:
            row = reader.execute("SELECT value FROM reports WHERE unit_code = %s AND period = %s AND indicator_code = %s",
                                 (ward, period, FLOW)).fetchone()
            if row is not None and row[0] == value:
                break
            time.sleep(0.002)
        acks.append(acked - start)
        seen.append(time.perf_counter() - acked)
    return acks, seen


def run(work, port, pgport, pid):
    months = months_of(work)
    with open(os.path.join(work, "indicators.csv")) as f:
        indicators = list(csv.DictReader(f))
    rules = {r["across_time"] for r in indicators if r["across_units"] == "sum"}
    assert rules <= {"sum", "last"}, f"Q2's peer SQL knows the rules sum and last, not {rules}"
    sums = [r["code"] for r in indicators if r["across_units"] == "sum"]
    with open(os.path.join(work, "wards.csv")) as f:
        wards = [r["ward_code"] for r in csv.DictReader(f)]

    duck, duck_conn = duck_engine(work)
    # Q7's ward: the first of the district that reported that month.
    ward = duck_conn.execute(f"""SELECT min(r.unit_code) FROM reports r JOIN wards w ON w.ward_code = r.unit_code
                                 WHERE w.district_code = '{DISTRICT}' AND r.period = '{MONTH}'""").fetchone()[0]
    baocao_conn = psycopg.connect(f"host=127.0.0.1 port={port} dbname=baocao user=bench", autocommit=True)
    engines = [psql_engine("baocao", baocao_conn), duck]
    # PGPORT "-": no PostgreSQL (the vn scale's target is DuckDB's).
    if pgport != "-":
        pg_conn = pg_connect(pgport)
        # A DBA's settings for an analytical workload: room to sort and hash in
        # memory, and no JIT compilation (it costs more than it saves here).
        pg_conn.execute("SET work_mem = '256MB'")
        pg_conn.execute("SET jit = off")
        engines.append(psql_engine("PostgreSQL", pg_conn))
    peers = [e.name for e in engines[1:]]

    results = []
    rss_before, _ = memory(pid)
    for name, sqls in workload(months, sums, ward).items():
        if QUERIES and name.split(" ")[0] not in QUERIES:
            continue
        answers, timings, first = {}, {}, {}
        for engine, sql in zip(engines, sqls):
            first[engine.name], rows = timed(engine, sql)
            answers[engine.name] = normalise(rows)
        reference = answers["baocao"]
        for other in peers:
            if not same(reference, answers[other]):
                sys.exit(f"{name}: baocao and {other} disagree: {difference(reference, answers[other])}")
        if not reference:
            sys.exit(f"{name}: no rows")
        # Warm runs, the engines taking turns.
        for engine in engines:
            timings[engine.name] = []
        for _ in range(RUNS):
            for engine, sql in zip(engines, sqls):
                seconds, _ = timed(engine, sql)
                timings[engine.name].append(seconds)
        results.append((name, len(reference), first, timings))
        print(f"{name}: {len(reference)} rows, " + ", ".join(
            f"{e}: {statistics.median(t) * 1000:.1f} ms" for e, t in timings.items()), file=sys.stderr)
    rss_after, peak = memory(pid)
    acks, seen = commit_to_visible(port, wards, months)

    lines = []
    names = ["baocao"] + peers
    lines.append("| query | rows | " + " | ".join(f"{e} ms" for e in names) + " | "
                 + " | ".join(f"baocao / {e}" for e in peers) + " |")
    lines.append("| --- | ---: | " + " | ".join("---:" for _ in names + peers) + " |")

    def cell(t):
        return f"{statistics.median(t) * 1000:.1f} ({min(t) * 1000:.1f}–{max(t) * 1000:.1f})"

    met = []
    for name, rows, first, t in results:
        b = statistics.median(t["baocao"])
        others = [statistics.median(t[e]) for e in peers]
        met.append(b <= min(others))
        lines.append(f"| {name} | {rows:,} | " + " | ".join(cell(t[e]) for e in names) + " | "
                     + " | ".join(f"{b / o:.2f}" for o in others) + " |")
    lines.append("")
    lines.append(f"Median (min–max) of {RUNS} warm runs per query and engine; every engine's answer was checked "
                 f"equal to baocao's first. baocao at or below the best peer's median: {sum(met)} of {len(met)} queries.")
    lines.append("")
    lines.append("| first run after start, ms | " + " | ".join(r[0].split(" ")[0] for r in results) + " |")
    lines.append("| --- | " + " | ".join("---:" for _ in results) + " |")
    for e in names:
        lines.append(f"| {e} | " + " | ".join(f"{r[2][e] * 1000:.0f}" for r in results) + " |")
    lines.append("")
    lines.append(f"baocao's memory: {rss_before:.0f} MiB resident before the queries, {rss_after:.0f} MiB after, "
                 f"peak {peak:.0f} MiB. INSERT of one value until acknowledged: p50 {pct(acks, 50) * 1000:.1f} ms, "
                 f"p99 {pct(acks, 99) * 1000:.1f} ms; then until another connection reads it: "
                 f"p50 {pct(seen, 50) * 1000:.1f} ms, p99 {pct(seen, 99) * 1000:.1f} ms ({len(seen)} commits).")
    table = "\n".join(lines)
    print(table)
    with open(os.path.join(work, "results.md"), "w") as f:
        f.write(table + "\n")


def main():
    command, args = sys.argv[1], sys.argv[2:]
    if command == "prepare":
        prepare(*args)
    elif command == "load-postgres":
        load_postgres(*args)
    elif command == "run":
        run(*args)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
