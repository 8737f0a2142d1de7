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
