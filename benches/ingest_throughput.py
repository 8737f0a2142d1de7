#!/usr/bin/env python3
"""Bulk ingest: rows per second into baocao (COPY, and files dropped into
the landing folder) and into PostgreSQL (COPY into an indexed table), the
same rows through the same client library.

    benches/run-throughput-bench      # sets everything up and runs this

Sub-commands, each run by the runner against a server it started:

    export PORT CSV                   the latest values of a baocao warehouse as CSV
    postgres PORT CSV                 PostgreSQL: one COPY, then one COPY per month
    baocao PORT CSV MODE WAREHOUSE    MODE: copy | copy-monthly | landing
    summary RESULTS                   the Markdown table of several runs

Each run prints one tab-separated line per path: path, rows, seconds. The
summary gives per path the median rows/s over the runs and their range.
"""
import os
import statistics
import sys
import time

import psycopg

CHUNK = 1 << 20
COPY_IN = "COPY reports (unit_code, period, indicator_code, value) FROM STDIN WITH (FORMAT csv, HEADER)"


def connect(port, user="bench"):
    return psycopg.connect(f"host=127.0.0.1 port={port} dbname={'baocao' if user == 'bench' else 'postgres'} user={user}", autocommit=True)


def load(path):
    with open(path, "rb") as f:
        return f.read()


def months(data):
    """The CSV split by period (the file is ordered by period): {period: bytes with header}."""
    header, _, body = data.partition(b"\n")
    out, rows = {}, {}
    for line in body.splitlines(keepends=True):
        period = line.split(b",", 2)[1].decode()
        out.setdefault(period, [header + b"\n"]).append(line)
        rows[period] = rows.get(period, 0) + 1
    return {p: b"".join(lines) for p, lines in out.items()}, rows


def copy(conn, data):
    with conn.cursor() as cur:
        with cur.copy(COPY_IN) as cp:
            for i in range(0, len(data), CHUNK):
                cp.write(data[i : i + CHUNK])
        return cur.rowcount


def row(path, rows, seconds):
    print(f"{path}\t{rows}\t{seconds}", flush=True)


def summary(results):
    runs = {}
    with open(results) as f:
        for line in f:
            path, rows, seconds = line.rstrip("\n").split("\t")
            runs.setdefault(path, []).append((int(rows), float(seconds)))
    print("| path | rows | runs | median s | rows/s, median | rows/s, min-max |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for path, results in runs.items():
        rates = [rows / seconds for rows, seconds in results]
        seconds = statistics.median(s for _, s in results)
        print(f"| {path} | {results[0][0]:,} | {len(results)} | {seconds:.1f} | {statistics.median(rates):,.0f} | {min(rates):,.0f}-{max(rates):,.0f} |")


def export(port, path):
    with connect(port) as conn, conn.cursor() as cur, open(path, "wb") as out:
        sql = "COPY (SELECT unit_code, period, indicator_code, value FROM reports ORDER BY period, unit_code, indicator_code) TO STDOUT WITH (FORMAT csv, HEADER)"
        with cur.copy(sql) as cp:
            for chunk in cp:
                out.write(chunk)
    with open(path) as f:
        print(f"exported {sum(1 for _ in f) - 1:,} values to {path}", file=sys.stderr)


PG_TABLE = """
DROP TABLE IF EXISTS reports;
CREATE TABLE reports (
    unit_code text NOT NULL,
    period text NOT NULL,
    indicator_code text NOT NULL,
    value double precision NOT NULL,
    submitted_at timestamptz NOT NULL DEFAULT now(),
    submitted_by text NOT NULL DEFAULT current_user
);
-- The look-up every roll-up and "latest correction" query needs.
CREATE INDEX reports_key ON reports (period, unit_code, indicator_code, submitted_at DESC);
"""


def postgres(port, path):
    data = load(path)
    by_month, counts = months(data)
    with connect(port, user="postgres") as conn:
        conn.execute(PG_TABLE)
        start = time.perf_counter()
        n = copy(conn, data)
        row("PostgreSQL 15: one COPY into an indexed table", n, time.perf_counter() - start)
        conn.execute(PG_TABLE)
        start = time.perf_counter()
        n = sum(copy(conn, part) for part in by_month.values())
        row(f"PostgreSQL 15: one COPY per period ({len(by_month)} statements)", n, time.perf_counter() - start)
        got = conn.execute("SELECT count(*) FROM reports").fetchone()[0]
        assert got == sum(counts.values()), f"PostgreSQL holds {got} rows"


def visible_rows(conn):
    return conn.execute("SELECT count(*) FROM reports").fetchone()[0]


def baocao(port, path, mode, warehouse):
    data = load(path)
    by_month, counts = months(data)
    total = sum(counts.values())
    with connect(port) as conn:
        if mode == "copy":
            start = time.perf_counter()
            n = copy(conn, data)
            row("baocao: one COPY (validated, one atomic commit)", n, time.perf_counter() - start)
        elif mode == "copy-monthly":
            start = time.perf_counter()
            n = sum(copy(conn, part) for part in by_month.values())
            row(f"baocao: one COPY per period ({len(by_month)} commits)", n, time.perf_counter() - start)
        elif mode == "landing":
            landing = os.path.join(warehouse, "landing")
            # Written under temporary names first, as the protocol says;
            # the clock starts at the first rename.
            for period, part in by_month.items():
                with open(os.path.join(landing, f".{period}.csv.tmp"), "wb") as f:
                    f.write(part)
            start = time.perf_counter()
            for period in by_month:
                os.rename(os.path.join(landing, f".{period}.csv.tmp"), os.path.join(landing, f"{period}.csv"))
            # A file leaves landing/ only once its commit is in the log,
            # and a commit is visible to the next query (the tests check
            # both): watch the folder. Counting the table every few
            # milliseconds instead would take the server's cores from the
            # load; the count below checks every row arrived.
            while any(not name.startswith(".") for name in os.listdir(landing)):
                time.sleep(0.01)
            row(f"baocao: one file per period dropped into landing/ ({len(by_month)} files), until all committed", total, time.perf_counter() - start)
            n = visible_rows(conn)
        else:
            sys.exit(f"unknown mode {mode}")
        assert n == total, f"{n} rows committed of {total}"
        assert visible_rows(conn) == total


def main():
    command, args = sys.argv[1], sys.argv[2:]
    if command == "export":
        export(*args)
    elif command == "postgres":
        postgres(*args)
    elif command == "baocao":
        baocao(*args)
    elif command == "summary":
        summary(*args)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
