# Shared by the benchmark runners: `source benches/lib.sh` from the
# repository root. Builds baocao in release mode and prepares the Python
# environment the benchmarks' clients run in.
target="${CARGO_TARGET_DIR:-target}"
bin="$target/release/baocao"
venv=target/bench-venv

build_release() {
    cargo build --release --locked --bin baocao
}

bench_venv() {
    if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import duckdb, psycopg' 2>/dev/null; then
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet duckdb 'psycopg[binary]'
    fi
}

# start_server WAREHOUSE [serve flags...]: starts `baocao serve` on a free
# loopback port in the background; sets $server (pid) and $port.
start_server() {
    local warehouse=$1
    shift
    local log
    log=$(mktemp)
    "$bin" serve --warehouse "$warehouse" --listen 127.0.0.1:0 "$@" >"$log" 2>/dev/null &
    server=$!
    port=
    for _ in $(seq 1 600); do
        port=$(sed -n 's/^baocao is listening on 127.0.0.1:\([0-9]*\)$/\1/p' "$log")
        [ -n "$port" ] && break
        sleep 0.1
    done
    rm -f "$log"
    [ -n "$port" ] || { echo "the server did not start" >&2; exit 1; }
}

# postgres_bin: the newest installed PostgreSQL server's bin folder,
# installing the Debian package first if there is none.
postgres_bin() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
    if [ -z "$dir" ] || [ ! -x "$dir/initdb" ]; then
        local sudo=
        [ "$(id -u)" -ne 0 ] && sudo=sudo
        $sudo apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >&2
        dir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    fi
    echo "$dir"
}

# as_postgres CMD...: runs CMD as the `postgres` user when run as root
# (PostgreSQL refuses to run as root), as the caller otherwise.
as_postgres() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# start_postgres: a throw-away PostgreSQL cluster on a free loopback port,
# owned by `postgres` when run as root; sets $pgbin, $pgroot, $pgdata and
# $pgport. Defaults except memory and WAL size, sized for this machine;
# fsync and synchronous commit stay on. stop_postgres removes it.
start_postgres() {
    pgbin=$(postgres_bin)
    pgroot=$(mktemp -d)
    [ "$(id -u)" -eq 0 ] && chown postgres "$pgroot"
    pgdata="$pgroot/data"
    as_postgres "$pgbin/initdb" -D "$pgdata" -U postgres --auth=trust -E UTF8 >/dev/null
    pgport=$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    as_postgres "$pgbin/pg_ctl" -D "$pgdata" -w -l "$pgroot/log" \
        -o "-p $pgport -k $pgroot -c listen_addresses=127.0.0.1 -c shared_buffers=2GB -c maintenance_work_mem=1GB -c max_wal_size=8GB -c max_connections=200" start >/dev/null
}

stop_postgres() {
    [ -n "${pgdata:-}" ] && as_postgres "$pgbin/pg_ctl" -D "$pgdata" -m fast stop >/dev/null 2>&1
    [ -n "${pgroot:-}" ] && rm -rf "$pgroot"
    pgdata=
    pgroot=
}

# bench_values: the demo generator's reports for every Hanoi ward from
# 2001-01 to 2024-12 as a warehouse ($values_warehouse) and its latest values as one
# CSV ($values, about 2.9 million rows), made once in target/throughput-bench.
bench_values() {
    values_warehouse=target/throughput-bench/source
    values=target/throughput-bench/values.csv
    mkdir -p target/throughput-bench
    if [ ! -s "$values" ]; then
        "$bin" demo --warehouse "$values_warehouse" --from 2001-01 --to 2024-12 --no-serve --no-demo-accounts
        start_server "$values_warehouse" --auto-compact-secs 0
        "$venv/bin/python" benches/ingest_throughput.py export "$port" "$values"
        kill "$server"; server=
    fi
}
