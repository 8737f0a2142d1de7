#!/usr/bin/env python3
"""Real-time ingest: how soon a submission is visible, and what many small
files cost a query before and after compaction.

    benches/run-ingest-bench          # sets everything up and runs this

Arguments: BAOCAO_BINARY WAREHOUSE_DIR PORT UNITS_CSV.
"""
import csv
import os
import statistics
import subprocess
import sys
import time

import psycopg

binary, warehouse, port, units_csv = sys.argv[1:5]
landing = os.path.join(warehouse, "landing")
wards = [r["code"] for r in csv.DictReader(open(units_csv)) if r["level"] == "ward"]


def connect():
    return psycopg.connect(f"host=127.0.0.1 port={port} dbname=baocao user=bench", autocommit=True)


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))] * 1000


writer, reader = connect(), connect()
VISIBLE = "SELECT value FROM reports WHERE unit_code = %s AND period = %s AND indicator_code = 'births'"


def wait_visible(unit, period, value):
    """Polls every 2 ms (the measure's resolution): a poll loop with no pause
    would keep one of this machine's two cores busy in this client and the
    server, and time the contention rather than the server."""
    while True:
        row = reader.execute(VISIBLE, (unit, period)).fetchone()
        if row is not None and row[0] == value:
            return time.perf_counter()
        time.sleep(0.002)


# 1. INSERT: acknowledgement, then the first query on another connection.
acks, visible = [], []
for i, ward in enumerate(wards[:200]):
    value = float(i + 1)
    start = time.perf_counter()
    writer.execute("INSERT INTO reports (unit_code, period, indicator_code, value) VALUES (%s, '2024-06', 'births', %s)", (ward, value))
    acked = time.perf_counter()
    seen = wait_visible(ward, "2024-06", value)
    acks.append(acked - start)
    visible.append(seen - acked)

# 2. Landing folder: rename into landing, then the first query that sees it.
# On a compacted table, as the background compaction keeps it: a commit's
# cost grows with the files committed since the last compaction.
subprocess.run([binary, "compact", "--warehouse", warehouse, "--retention-hours", "0"], check=True, capture_output=True)
dropped = []
for i, ward in enumerate(wards[:100]):
    value = float(i + 1000)
    tmp = os.path.join(landing, f".{ward}.csv.tmp")
    with open(tmp, "w") as f:
        f.write(f"unit_code,period,births\n{ward},2024-05,{value:g}\n")
    start = time.perf_counter()
    os.rename(tmp, os.path.join(landing, f"{ward}.csv"))
    seen = wait_visible(ward, "2024-05", value)
    dropped.append(seen - start)

print("| path | p50 (ms) | p99 (ms) | n |")
print("| --- | ---: | ---: | ---: |")
print(f"| INSERT of one value, until acknowledged | {pct(acks, 50):.1f} | {pct(acks, 99):.1f} | {len(acks)} |")
print(f"| acknowledged INSERT, until another connection sees it | {pct(visible, 50):.1f} | {pct(visible, 99):.1f} | {len(visible)} |")
print(f"| file renamed into landing/, until a query sees it | {pct(dropped, 50):.1f} | {pct(dropped, 99):.1f} | {len(dropped)} |")

# 3. Small files: every ward's report of one month as its own file, each
# arriving after the previous one was taken, as reports trickle in over a
# day (files that arrive together are committed together, in one file per
# partition).
for ward in wards:
    tmp = os.path.join(landing, f".{ward}-apr.csv.tmp")
    with open(tmp, "w") as f:
        f.write(f"unit_code,period,births,deaths\n{ward},2024-04,7,3\n")
    os.rename(tmp, os.path.join(landing, f"{ward}-apr.csv"))
    while any(not n.startswith(".") for n in os.listdir(landing)):
        time.sleep(0.002)
ROLLUP = "SELECT indicator_code, value FROM rollup WHERE unit_code = '01' AND period = '2024-04'"


def median_ms(sql):
    reader.execute(sql).fetchall()
    times = []
    for _ in range(7):
        start = time.perf_counter()
        reader.execute(sql).fetchall()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


files = len(os.listdir(os.path.join(warehouse, "reports", "period=2024-04")))
before = median_ms(ROLLUP)
result_before = sorted(reader.execute(ROLLUP).fetchall())
subprocess.run([binary, "compact", "--warehouse", warehouse, "--retention-hours", "0"], check=True, capture_output=True)
after = median_ms(ROLLUP)
assert sorted(reader.execute(ROLLUP).fetchall()) == result_before, "compaction changed a result"
files_after = len(os.listdir(os.path.join(warehouse, "reports", "period=2024-04")))
print()
print("| city roll-up of 2024-04 | files in the partition | median (ms) |")
print("| --- | ---: | ---: |")
print(f"| before compaction | {files} | {before:.1f} |")
print(f"| after `baocao compact` | {files_after} | {after:.1f} |")
