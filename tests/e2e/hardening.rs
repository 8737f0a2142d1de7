//! Hostile and broken clients: malformed protocol messages and statements
//! nested beyond any sense end in an error for that client alone; the
//! server stays up, every other connection keeps working, and memory goes
//! back to where it was.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{TestServer, TestWarehouse};

/// A small deterministic generator (xorshift64*): the same seed gives the
/// same cases, so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// Fewer than `max` random bytes.
    fn some_bytes(&mut self, max: u64) -> Vec<u8> {
        let n = self.below(max) as usize;
        self.bytes(n)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

fn startup() -> Vec<u8> {
    let body = b"\0\x03\0\0user\0fuzzer\0database\0baocao\0\0";
    let mut out = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// A frame with the given type and body, its length field as given.
fn frame(kind: u8, length: i32, body: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// A message body that is almost right: a real message's fields with counts
/// and lengths that lie about what follows.
fn lying_body(rng: &mut Rng, kind: u8) -> Vec<u8> {
    let mut b = Vec::new();
    let count = *rng.pick(&[0i16, 1, 2, 100, -1, i16::MAX, i16::MIN]);
    let length = *rng.pick(&[-2i32, -1, 0, 3, 1000, i32::MAX, i32::MIN]);
    match kind {
        b'P' => {
            b.extend_from_slice(b"s\0SELECT $1\0");
            b.extend_from_slice(&count.to_be_bytes());
            b.extend_from_slice(&rng.some_bytes(8));
        }
        b'B' => {
            b.extend_from_slice(b"\0s\0");
            b.extend_from_slice(&count.to_be_bytes());
            b.extend_from_slice(&[0, 1]);
            b.extend_from_slice(&count.to_be_bytes());
            b.extend_from_slice(&length.to_be_bytes());
            b.extend_from_slice(&rng.some_bytes(6));
        }
        b'E' => {
            b.extend_from_slice(b"\0");
            if rng.below(2) == 0 {
                b.extend_from_slice(&length.to_be_bytes());
            }
        }
        b'D' | b'C' => {
            if rng.below(2) == 0 {
                b.push(*rng.pick(b"SPX"));
                b.extend_from_slice(b"unknown\0");
            }
        }
        b'p' => b.extend_from_slice(&length.to_be_bytes()),
        _ => b.extend_from_slice(&rng.some_bytes(24)),
    }
    b
}

/// One hostile connection: what it sends depends only on `rng`.
async fn hostile_connection(port: u16, rng: &mut Rng) {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)).await else {
        return;
    };
    let mut out = Vec::new();
    match rng.below(6) {
        // Garbage where the startup packet belongs, with lengths that lie.
        0 => {
            let length = *rng.pick(&[0i32, 3, 4, 8, 9, 10_001, -1, i32::MAX]);
            out.extend_from_slice(&length.to_be_bytes());
            out.extend_from_slice(&rng.some_bytes(64));
        }
        // SSLRequest, then garbage instead of a TLS handshake or startup.
        1 => {
            out.extend_from_slice(&8i32.to_be_bytes());
            out.extend_from_slice(&80_877_103i32.to_be_bytes());
            out.extend_from_slice(&rng.some_bytes(64));
        }
        // CancelRequest with random keys, or with a body that lies.
        2 => {
            let length = *rng.pick(&[16i32, 12, 20, 4, -16]);
            out.extend_from_slice(&length.to_be_bytes());
            out.extend_from_slice(&80_877_102i32.to_be_bytes());
            out.extend_from_slice(&rng.bytes(8));
        }
        // A good startup, then messages of any type with lying lengths.
        _ => {
            out.extend_from_slice(&startup());
            for _ in 0..=rng.below(4) {
                let kind = *rng.pick(&[
                    b'Q', b'P', b'B', b'E', b'D', b'C', b'S', b'H', b'd', b'c', b'f', b'p', b'F',
                    b'X', 0, 0xff,
                ]);
                let body = lying_body(rng, kind);
                let honest = body.len() as i32 + 4;
                let length = match rng.below(5) {
                    0 => *rng.pick(&[0, 1, 3, -1, -4, i32::MIN]),
                    1 => *rng.pick(&[i32::MAX, 0x4000_0000, 100 << 20]),
                    2 => honest + rng.below(16) as i32 - 8,
                    _ => honest,
                };
                out.extend_from_slice(&frame(kind, length, &body));
            }
            if rng.below(4) == 0 {
                // Cut off in the middle.
                let keep = rng.below(out.len() as u64) as usize;
                out.truncate(keep);
            }
        }
    }
    let _ = stream.write_all(&out).await;
    // Read what the server answers until it closes or goes quiet.
    let mut buf = [0u8; 4096];
    while let Ok(Ok(n)) =
        tokio::time::timeout(Duration::from_millis(50), stream.read(&mut buf)).await
    {
        if n == 0 {
            break;
        }
    }
}

/// Keeps running `SELECT 1` on one healthy connection; returns how many ran
/// and the first failure, once `stop` flips.
async fn healthy_client(
    client: tokio_postgres::Client,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (u64, Option<String>) {
    let mut ran = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        match client.query_one("SELECT 1", &[]).await {
            Ok(row) if row.get::<_, i64>(0) == 1 => ran += 1,
            Ok(_) => return (ran, Some("SELECT 1 gave another value".into())),
            Err(e) => return (ran, Some(e.to_string())),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (ran, None)
}

#[tokio::test]
async fn the_server_survives_a_wire_fuzzer() {
    let w = TestWarehouse::empty();
    let mut server = TestServer::start(&w).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let healthy = tokio::spawn(healthy_client(server.client().await, stop.clone()));
    // Warm up (first queries, allocator arenas), then take the baseline.
    let mut rng = Rng(0x005e_edba_0ca0);
    for _ in 0..50 {
        hostile_connection(server.port, &mut rng).await;
    }
    let baseline = server.rss_kib();

    // Bounded by cases and by time, whichever ends first (the time bound
    // keeps CI short on a slow machine; the cases are the same every run).
    let started = std::time::Instant::now();
    let mut cases = 0;
    while cases < 3000 && started.elapsed() < Duration::from_secs(20) {
        hostile_connection(server.port, &mut rng).await;
        cases += 1;
        assert!(server.running(), "the server died at case {cases}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ran, failure) = healthy.await.expect("healthy client task");
    assert_eq!(failure, None, "the healthy connection failed");
    assert!(ran > 0);
    assert!(server.running(), "the server died");
    assert!(cases >= 100, "only {cases} cases ran");

    // Memory comes back: a hostile client's buffers go with its connection.
    let mut rss = server.rss_kib();
    for _ in 0..50 {
        if rss <= baseline + 64 * 1024 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        rss = server.rss_kib();
    }
    assert!(
        rss <= baseline + 64 * 1024,
        "resident memory {rss} KiB after the fuzzer, {baseline} KiB before"
    );
    // And new clients are served.
    let client = server.client().await;
    assert_serves(&client).await;
    // No decoder panicked on the way: a panic ends only its connection,
    // which the checks above would not notice.
    crate::support::assert_no_panics(&server);
}

/// Asserts that `client` is served: `SELECT 1` answers 1.
async fn assert_serves(client: &tokio_postgres::Client) {
    let one: i64 = client
        .query_one("SELECT 1", &[])
        .await
        .expect("SELECT 1")
        .get(0);
    assert_eq!(one, 1);
}

/// The types of the backend messages in `bytes`, in order.
fn message_types(mut bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    while bytes.len() >= 5 {
        types.push(bytes[0]);
        let length = i32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
        let Ok(length) = usize::try_from(length) else {
            break;
        };
        bytes = bytes.get(1 + length..).unwrap_or_default();
    }
    types
}

/// The messages that crashed or confused servers on this stack, each on a
/// fresh connection after a good startup: each gets an error and a closed
/// connection, and the next client is served.
#[tokio::test]
async fn malformed_messages_are_refused_with_a_protocol_error() {
    let w = TestWarehouse::empty();
    let mut server = TestServer::start(&w).await;
    let mut bind_lies = b"\0s\0".to_vec();
    bind_lies.extend_from_slice(&0i16.to_be_bytes());
    bind_lies.extend_from_slice(&1i16.to_be_bytes());
    bind_lies.extend_from_slice(&1000i32.to_be_bytes()); // 1000 bytes follow: they do not
    bind_lies.extend_from_slice(b"ab");
    let mut bind_count = b"\0s\0".to_vec();
    bind_count.extend_from_slice(&i16::MAX.to_be_bytes()); // 32767 format codes: none follow
    let mut parse_count = b"s\0SELECT 1\0".to_vec();
    parse_count.extend_from_slice(&100i16.to_be_bytes()); // 100 type oids: none follow
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "Bind whose value is shorter than its length",
            frame(b'B', bind_lies.len() as i32 + 4, &bind_lies),
        ),
        (
            "Bind with more format codes than bytes",
            frame(b'B', bind_count.len() as i32 + 4, &bind_count),
        ),
        (
            "Parse with more type oids than bytes",
            frame(b'P', parse_count.len() as i32 + 4, &parse_count),
        ),
        ("Execute without its row limit", frame(b'E', 5, b"\0")),
        ("Describe without a body", frame(b'D', 4, b"")),
        ("a length below 4", frame(b'Q', 2, b"")),
        ("a negative length", frame(b'Q', -1, b"SELECT 1\0")),
        (
            "a length over the maximum",
            frame(b'Q', 0x3fff_0000, b"SELECT 1\0"),
        ),
        (
            "CopyData outside COPY with a length that lies",
            frame(b'd', 3, b"x"),
        ),
        ("an unknown message type", frame(b'?', 8, b"abcd")),
    ];
    for (what, message) in cases {
        let mut stream = TcpStream::connect(("127.0.0.1", server.port))
            .await
            .expect("connect");
        stream.write_all(&startup()).await.expect("startup");
        stream.write_all(&message).await.expect("send");
        // The server answers and closes; a guard against a hang, not a
        // timing check.
        let mut answer = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer)).await;
        assert!(read.is_ok(), "{what}: the connection was left open");
        assert!(server.running(), "{what}: the server died");
        assert!(
            message_types(&answer).contains(&b'E'),
            "{what}: no ErrorResponse in {:?}",
            message_types(&answer)
        );
    }
    let client = server.client().await;
    assert_serves(&client).await;
}

/// Statements nested deeper than the server accepts: SQLSTATE 54001 through
/// both protocols, the connection stays usable, the server stays up.
#[tokio::test]
async fn statements_nested_too_deep_are_refused_with_54001() {
    let w = TestWarehouse::empty();
    let mut server = TestServer::start(&w).await;
    let client = server.client().await;
    let n = 100_000;
    let deep = [
        ("+", format!("SELECT {}", vec!["1"; n].join(" + "))),
        (
            "AND",
            format!(
                "SELECT count(*) FROM units WHERE {}",
                vec!["code <> 'x'"; n].join(" AND ")
            ),
        ),
        (
            "OR",
            format!(
                "SELECT count(*) FROM units WHERE {}",
                vec!["code = 'x'"; n].join(" OR ")
            ),
        ),
        (
            "brackets",
            format!("SELECT {}1{}", "(".repeat(n), ")".repeat(n)),
        ),
        (
            "CASE",
            format!(
                "SELECT {}1{}",
                "CASE WHEN true THEN ".repeat(n),
                " END".repeat(n)
            ),
        ),
        (
            "function calls",
            format!("SELECT {}1{}", "abs(".repeat(n), ")".repeat(n)),
        ),
        (
            "subqueries",
            format!("SELECT {}1{}", "(SELECT ".repeat(n), ")".repeat(n)),
        ),
        ("casts", format!("SELECT 1{}", "::bigint".repeat(n))),
        ("unary minus", format!("SELECT {}1", "- ".repeat(n))),
    ];
    for (what, sql) in &deep {
        let simple = client.simple_query(sql).await.expect_err(what);
        assert_eq!(
            simple.code().map(|c| c.code()),
            Some("54001"),
            "{what}, simple protocol: {simple}"
        );
        let prepared = client.prepare(sql).await.expect_err(what);
        assert_eq!(
            prepared.code().map(|c| c.code()),
            Some("54001"),
            "{what}, extended protocol: {prepared}"
        );
        assert!(server.running(), "{what}: the server died");
    }
    let message = client
        .simple_query(&deep[0].1)
        .await
        .expect_err("deep")
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_default();
    assert!(message.contains("statement too complex"), "{message}");
    // Within the bound, the same shapes work: a filter of 500 OR terms.
    let codes: Vec<String> = (0..500).map(|i| format!("code = '{:05}'", i)).collect();
    let sql = format!(
        "SELECT count(*) FROM units WHERE level = 'ward' AND ({})",
        codes.join(" OR ")
    );
    let wide: i64 = client
        .query_one(&sql, &[])
        .await
        .expect("500 OR terms")
        .get(0);
    let listed: i64 = client
        .query_one(
            &format!(
                "SELECT count(*) FROM units WHERE level = 'ward' AND code IN ({})",
                (0..500)
                    .map(|i| format!("'{i:05}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            &[],
        )
        .await
        .expect("IN list")
        .get(0);
    assert!(wide > 0);
    assert_eq!(wide, listed);
    let sum: i64 = client
        .query_one(&format!("SELECT {}", vec!["1"; 500].join(" + ")), &[])
        .await
        .expect("500 terms")
        .get(0);
    assert_eq!(sum, 500);
}

/// A statement that would run for hours: every combination of four units.
const ENDLESS: &str = "SELECT sum(length(a.name || b.name || c.name || d.name)) FROM units a, units b, units c, units d";

/// The server sends a round's answers when the round ends, even when the
/// client has sent its next statement already: a pipelined fast query gets
/// its rows while an endless one queued behind it runs.
#[tokio::test]
async fn a_pipelined_query_is_answered_before_the_next_one_ends() {
    let w = TestWarehouse::empty();
    let server = TestServer::start(&w).await;
    let client = server.client().await;
    let cancel = client.cancel_token();
    // Polled in this order, the two are sent in this order, together.
    let fast = client.simple_query("SELECT 41 + 1");
    let endless = client.simple_query(ENDLESS);
    tokio::pin!(fast, endless);
    // A guard against a hang (the answer held behind the endless query),
    // not a timing check.
    let rows = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::select! {
            biased;
            rows = &mut fast => rows,
            ended = &mut endless => panic!("the endless query ended first: {ended:?}"),
        }
    })
    .await
    .expect("the fast query's answer was held back")
    .expect("fast query");
    let value = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    });
    assert_eq!(value.as_deref(), Some("42"));
    // A cancel that arrives before the endless statement has started is
    // ignored, as PostgreSQL ignores one between statements: cancel until
    // it ends (a guard against a hang, not a timing check).
    let mut ended = None;
    for _ in 0..120 {
        cancel
            .cancel_query(tokio_postgres::NoTls)
            .await
            .expect("cancel");
        if let Ok(result) = tokio::time::timeout(Duration::from_millis(500), &mut endless).await {
            ended = Some(result);
            break;
        }
    }
    let error = ended
        .expect("the endless statement was never cancelled")
        .expect_err("cancelled");
    assert_eq!(error.code().map(|c| c.code()), Some("57014"), "{error}");
    assert_serves(&client).await;
}

#[tokio::test]
async fn statement_timeout_cancels_a_running_statement() {
    let w = TestWarehouse::empty();
    let server = TestServer::start(&w).await;
    let client = server.client().await;
    client
        .batch_execute("SET statement_timeout = 300")
        .await
        .expect("set");
    let simple = client.simple_query(ENDLESS).await.expect_err("cancelled");
    assert_eq!(simple.code().map(|c| c.code()), Some("57014"), "{simple}");
    let extended = client.query(ENDLESS, &[]).await.expect_err("cancelled");
    assert_eq!(
        extended.code().map(|c| c.code()),
        Some("57014"),
        "{extended}"
    );
    // The connection goes on; a statement within the limit is untouched.
    let n: i64 = client
        .query_one("SELECT count(*) FROM units", &[])
        .await
        .expect("count")
        .get(0);
    assert!(n > 0);
    client
        .batch_execute("SET statement_timeout = 0")
        .await
        .expect("reset");

    // The server's default applies to every session until it sets its own.
    let server = TestServer::start_with(&w, &["--statement-timeout-ms", "300"]).await;
    let client = server.client().await;
    let e = client.query(ENDLESS, &[]).await.expect_err("cancelled");
    assert_eq!(e.code().map(|c| c.code()), Some("57014"), "{e}");
    let message = e.as_db_error().map(|e| e.message().to_string());
    assert_eq!(
        message.as_deref(),
        Some("canceling statement due to statement timeout")
    );
    let n: i64 = client
        .query_one("SELECT count(*) FROM units", &[])
        .await
        .expect("count")
        .get(0);
    assert!(n > 0);
}

/// A statement whose planning takes long: an arithmetic chain within the
/// complexity bound (DataFusion's planning grows with the square of its
/// length), whose execution is one row.
fn slow_to_plan() -> (String, i64) {
    let terms = 1500;
    (
        format!("SELECT {}", vec!["1"; terms].join(" + ")),
        terms as i64,
    )
}

/// What the server logs when the planning of a statement whose client was
/// answered stops, and when it ran to its end all the same.
const PLANNING_STOPPED: &str = "an abandoned planning stopped";
const PLANNING_RAN_ON: &str = "an abandoned planning ran to its end";
/// ... and when a statement planned in its connection's task stops.
const INLINE_PLANNING_STOPPED: &str = "a statement planned inline stopped";

/// `statement_timeout` ends a statement while it is still being planned,
/// not when planning ends: the same statement without a timeout, started
/// first on another connection, is still being planned when the timed-out
/// one has its answer. The plannings the timeouts abandoned stop, and so
/// does an EXPLAIN's, planned in its connection's task.
#[tokio::test]
async fn statement_timeout_ends_a_statement_still_being_planned() {
    let w = TestWarehouse::empty();
    let server = TestServer::start_with_env(&w, &[], &[("BAOCAO_LOG", "info")]).await;
    let (sql, sum) = slow_to_plan();
    let patient = server.client().await;
    let hasty = server.client().await;
    // Long enough for the parsing before the planning (inline, and slow in
    // a debug build on a busy machine) to end first: the timeout is to
    // find the statement on its planning thread.
    hasty
        .batch_execute("SET statement_timeout = 500")
        .await
        .expect("set");
    let patient_sql = sql.clone();
    let planning = tokio::spawn(async move {
        let rows = patient.simple_query(&patient_sql).await?;
        Ok::<_, tokio_postgres::Error>(rows)
    });
    let simple = hasty.simple_query(&sql).await.expect_err("timed out");
    assert_eq!(simple.code().map(|c| c.code()), Some("57014"), "{simple}");
    // Parse plans the statement: the timeout ends it there too (on a
    // connection of its own: `hasty` waits for the planning it abandoned).
    let parser = server.client().await;
    parser
        .batch_execute("SET statement_timeout = 500")
        .await
        .expect("set");
    let extended = parser.prepare(&sql).await.expect_err("timed out");
    assert_eq!(
        extended.code().map(|c| c.code()),
        Some("57014"),
        "{extended}"
    );
    assert!(
        !planning.is_finished(),
        "the statement without a timeout was planned before the timed-out ones were answered"
    );
    // The two abandoned plannings stop (the log says so only if they
    // unwound, not if they ran to their end).
    server.logged(PLANNING_STOPPED, 2).await;
    // EXPLAIN plans the statement in the connection's task: the timeout
    // stops that planning too.
    let explainer = server.client().await;
    explainer
        .batch_execute("SET statement_timeout = 200")
        .await
        .expect("set");
    let explain = explainer
        .simple_query(&format!("EXPLAIN {sql}"))
        .await
        .expect_err("timed out");
    assert_eq!(explain.code().map(|c| c.code()), Some("57014"), "{explain}");
    server.logged(INLINE_PLANNING_STOPPED, 1).await;
    // The patient statement ends with the right answer.
    let rows = planning.await.expect("task").expect("planned in the end");
    let value = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    });
    assert_eq!(value, Some(sum.to_string()));
    // The timed-out connection goes on (its next statement waits for the
    // planning it abandoned: a session plans one statement at a time).
    hasty
        .batch_execute("SET statement_timeout = 0")
        .await
        .expect("reset");
    assert_serves(&hasty).await;
    assert!(server.log_lines(PLANNING_RAN_ON).is_empty());
}

/// A client that hangs up while its statement is being planned takes the
/// planning with it: the planning stops, and the server serves everyone.
#[tokio::test]
async fn a_client_that_goes_away_stops_its_statements_planning() {
    let w = TestWarehouse::empty();
    let server = TestServer::start_with_env(&w, &[], &[("BAOCAO_LOG", "info")]).await;
    let (sql, _) = slow_to_plan();
    // A long query, planned on a thread of its own.
    hang_up_while_planning(&server, sql.clone()).await;
    let stopped = server.logged(PLANNING_STOPPED, 1).await;
    assert_eq!(stopped.len(), 1, "{stopped:#?}");
    assert!(server.log_lines(PLANNING_RAN_ON).is_empty());
    // EXPLAIN, planned in the connection's task, which the hang-up reaches
    // through the session's cancel, seen from the query runtime.
    hang_up_while_planning(&server, format!("EXPLAIN {sql}")).await;
    server.logged(INLINE_PLANNING_STOPPED, 1).await;
    let client = server.client().await;
    assert_serves(&client).await;
}

/// Sends `sql` (slow to plan) on a connection of its own and hangs up once
/// the server is working on it.
async fn hang_up_while_planning(server: &TestServer, sql: String) {
    let (client, connection) = leaver(server).await;
    let before = server.cpu_ticks();
    let running = tokio::spawn(async move { client.simple_query(&sql).await.map(|_| ()) });
    worked(server, before).await;
    assert!(!running.is_finished(), "planned already");
    // The client disappears without a word, as a killed process does.
    running.abort();
    connection.abort();
}

/// A connection as a client that will leave without a word (its
/// connection task is returned, to abort).
async fn leaver(
    server: &TestServer,
) -> (
    tokio_postgres::Client,
    tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
) {
    let (client, connection) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user=leaver dbname=baocao",
            server.port
        ),
        tokio_postgres::NoTls,
    )
    .await
    .expect("connect");
    (client, tokio::spawn(connection))
}

/// Waits until the server has used a tenth of a second of CPU since it had
/// used `before` ticks: a statement that takes seconds of planning is then
/// under way, however busy the machine is (other tests share it). The
/// wait is a guard against a hang, not a timing check.
async fn worked(server: &TestServer, before: u64) {
    for _ in 0..1_200 {
        if server.cpu_ticks() - before >= 10 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the statement never got going");
}

/// CPU ticks the server used over the last half second.
async fn busy_ticks(server: &TestServer) -> u64 {
    let before = server.cpu_ticks();
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.cpu_ticks() - before
}

#[tokio::test]
async fn a_client_that_goes_away_takes_its_statement_with_it() {
    let w = TestWarehouse::empty();
    let server = TestServer::start(&w).await;
    let (client, connection) = leaver(&server).await;
    let running = tokio::spawn(async move { client.simple_query(ENDLESS).await.map(|_| ()) });
    // The statement is running: the server keeps a core busy (guards
    // against a hang, not timing checks).
    let mut busy = false;
    for _ in 0..60 {
        if busy_ticks(&server).await >= 25 {
            busy = true;
            break;
        }
    }
    assert!(busy, "the statement never got going");
    // The client disappears without a word, as a killed process does.
    running.abort();
    connection.abort();
    let mut idle = false;
    for _ in 0..60 {
        if busy_ticks(&server).await < 10 {
            idle = true;
            break;
        }
    }
    assert!(idle, "the server went on computing for a client that left");
    // Everyone else is served as before.
    let client = server.client().await;
    assert_serves(&client).await;
}

#[tokio::test]
async fn a_query_over_the_memory_limit_fails_alone_with_53200() {
    let w = TestWarehouse::empty();
    let server = TestServer::start_with(&w, &["--memory-limit-mb", "16"]).await;
    let client = server.client().await;
    let other = server.client().await;
    // A hash join whose build side (every pair of units' codes, about half
    // a million strings) does not fit in 16 MiB and cannot spill.
    let join = "SELECT count(*) FROM (SELECT a.code || b.code AS k FROM units a, units b) x \
                JOIN (SELECT a.code || b.code AS k FROM units a, units b) y ON x.k = y.k";
    let e = client.query(join, &[]).await.expect_err("over the limit");
    assert_eq!(e.code().map(|c| c.code()), Some("53200"), "{e}");
    // The same connection and every other one go on.
    let n: i64 = client
        .query_one("SELECT count(*) FROM units", &[])
        .await
        .expect("count")
        .get(0);
    assert!(n > 0);
    assert_serves(&other).await;
}

#[tokio::test]
async fn clients_over_the_connection_limit_are_refused_with_53300() {
    let w = TestWarehouse::empty();
    let server = TestServer::start_with(&w, &["--max-connections", "2"]).await;
    let first = server.client().await;
    let second = server.client().await;
    let config = format!(
        "host=127.0.0.1 port={} user=third dbname=baocao",
        server.port
    );
    let connect = || tokio_postgres::connect(&config, tokio_postgres::NoTls);
    let refused = connect().await.err().expect("a third client is refused");
    assert_eq!(refused.code().map(|c| c.code()), Some("53300"), "{refused}");
    // psql says why, too.
    let out = server.psql(&["-c", "SELECT 1"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("too many clients"), "{stderr}");
    // The connected clients are served; a freed slot takes a new client.
    assert_serves(&first).await;
    drop(second);
    let mut third = None;
    for _ in 0..100 {
        if let Ok((client, connection)) = connect().await {
            tokio::spawn(connection);
            third = Some(client);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let third = third.expect("a slot was freed");
    assert_serves(&third).await;
}

/// A load of concurrent statements that each hold a large hash table:
/// once it ends, the server's resident memory comes back near where it
/// was.
#[tokio::test]
async fn memory_returns_after_a_query_load() {
    let w = TestWarehouse::empty();
    let server = TestServer::start(&w).await;
    // Each groups two million numbers into a million groups: a hash table
    // of tens of MiB, held until the statement ends.
    let heavy = "SELECT count(*) FROM (SELECT x % 1000000 AS k, count(*) AS n \
                 FROM generate_series(1, 2000000) AS t(x) GROUP BY x % 1000000) AS g";
    let warm = server.client().await;
    // Warm up (plans, allocator arenas), then take the baseline.
    for _ in 0..2 {
        let row = warm.query_one(heavy, &[]).await.expect("warm-up");
        assert_eq!(row.get::<_, i64>(0), 1_000_000);
    }
    let baseline = server.rss_kib();
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(server.client().await);
    }
    let mut peak = baseline;
    let load = futures::future::join_all(clients.into_iter().map(|c| async move {
        for _ in 0..3 {
            let row = c.query_one(heavy, &[]).await.expect("a heavy statement");
            assert_eq!(row.get::<_, i64>(0), 1_000_000);
        }
    }));
    tokio::pin!(load);
    loop {
        tokio::select! {
            _ = &mut load => break,
            () = tokio::time::sleep(Duration::from_millis(50)) => peak = peak.max(server.rss_kib()),
        }
    }
    // The load did take memory, or the check below proves nothing.
    assert!(
        peak > baseline + 32 * 1024,
        "peak {peak} KiB, baseline {baseline} KiB"
    );
    // What the load took comes back, all but a twentieth: each runtime
    // thread collects its heap when it parks (`baocao-memory`). Without
    // that, a thread that went idle right after freeing kept its last
    // pages, about a tenth of the peak's growth here, for good.
    let back = |rss: u64| rss <= baseline + (peak - baseline) / 20;
    let mut rss = server.rss_kib();
    for _ in 0..100 {
        if back(rss) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        rss = server.rss_kib();
    }
    assert!(
        back(rss),
        "resident memory {rss} KiB after the load (peak {peak} KiB), {baseline} KiB before"
    );
    assert_serves(&warm).await;
}
