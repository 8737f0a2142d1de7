#!/usr/bin/env python3
"""The load benchmark's data, workload and report (see benches/run-load-bench).

    load PGPORT CSV           PostgreSQL: the reports table, indexed, analysed
    scripts PORT DIR          the workload as pgbench scripts, drawn from the data
    report DIR BASELINE_KIB PEAK_KIB AFTER_KIB
                              the Markdown table of the runs in DIR, and
                              baocao's resident memory before, at its peak
                              and ten seconds after

The workload, each query with concrete values drawn (seeded) from the data,
every script equally likely:
  a. one ward's full report for one month (a point lookup);
  b. the city's totals of every indicator for one month;
  c. one indicator's city-wide monthly series for one year.
"""
import glob
import os
import random
import re
import statistics
import sys

import psycopg

import ingest_throughput

def load(port, path):
    """The bulk-ingest benchmark's PostgreSQL table, loaded and analysed."""
    with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres", autocommit=True) as conn:
        conn.execute(ingest_throughput.PG_TABLE)
        ingest_throughput.copy(conn, ingest_throughput.load(path))
        conn.execute("ANALYZE reports")


def scripts(port, out):
    os.makedirs(out, exist_ok=True)
    rng = random.Random(173)
    with psycopg.connect(f"host=127.0.0.1 port={port} user=bench dbname=baocao", autocommit=True) as conn:
        months = [r[0] for r in conn.execute(
            "SELECT DISTINCT period FROM reports WHERE period LIKE '____-__' ORDER BY 1").fetchall()]
        indicators = [r[0] for r in conn.execute(
            "SELECT DISTINCT indicator_code FROM reports WHERE period = %s ORDER BY 1", (months[-1],)).fetchall()]
        queries = []
        for i in range(8):
            month = rng.choice(months)
            unit = rng.choice([r[0] for r in conn.execute(
                "SELECT DISTINCT unit_code FROM reports WHERE period = %s ORDER BY 1", (month,)).fetchall()])
            queries.append(f"SELECT indicator_code, value FROM reports WHERE unit_code = '{unit}' AND period = '{month}' ORDER BY indicator_code;")
            queries.append(f"SELECT indicator_code, sum(value) AS total FROM reports WHERE period = '{rng.choice(months)}' GROUP BY indicator_code ORDER BY indicator_code;")
            year = rng.choice(months)[:4]
            queries.append(f"SELECT period, sum(value) AS total FROM reports WHERE indicator_code = '{rng.choice(indicators)}' AND period >= '{year}-01' AND period <= '{year}-12' GROUP BY period ORDER BY period;")
    for i, q in enumerate(queries):
        with open(os.path.join(out, f"q{i:02d}.sql"), "w") as f:
            f.write(q + "\n")


def report(work, baseline_kib, peak_kib, after_kib):
    print("| server | clients | protocol | transactions | failed | tps | latency avg (ms) | latency p99 (ms) |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for summary in sorted(glob.glob(os.path.join(work, "*", "summary.txt"))):
        run = os.path.dirname(summary)
        server, clients, mode = os.path.basename(run).split("-")
        text = open(summary).read()

        def grab(pattern):
            m = re.search(pattern, text)
            return m.group(1) if m else "?"

        latencies = []
        for log in glob.glob(os.path.join(run, "tx*")):
            with open(log) as f:
                for line in f:
                    fields = line.split()
                    if len(fields) > 2 and fields[2].isdigit():
                        latencies.append(int(fields[2]) / 1000)
        p99 = statistics.quantiles(latencies, n=100)[98] if len(latencies) >= 100 else float("nan")
        name = "baocao" if server == "baocao" else "PostgreSQL 15"
        done = grab(r"number of transactions actually processed: (\d+)")
        failed = grab(r"number of failed transactions: (\d+)")
        tps = grab(r"tps = ([0-9.]+)")
        tps = f"{float(tps):,.1f}" if tps != "?" else "?"
        average = grab(r"latency average = ([0-9.]+) ms")
        print(f"| {name} | {clients} | {mode} | {done} | {failed} | {tps} | {average} | {p99:.1f} |")
    print()
    mib = lambda kib: f"{int(kib) / 1024:,.0f} MiB"
    print(f"baocao's resident memory: {mib(baseline_kib)} before the load, "
          f"{mib(peak_kib)} at its peak, {mib(after_kib)} ten seconds after it ended")


def main():
    command, args = sys.argv[1], sys.argv[2:]
    {"load": load, "scripts": scripts, "report": report}[command](*args)


if __name__ == "__main__":
    main()
