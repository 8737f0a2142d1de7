//! Kept physical plans (`plan_cache`): a query that comes again runs its
//! kept plan, and gets exactly what a fresh plan would give — after a
//! commit, for another session's rows, with a function whose value moves. The server logs each kept plan and
//! each reuse at debug level; the tests read those lines to know which
//! path a query took, and assert the answers either way.

use crate::support::{TestServer, TestWarehouse};

/// The server's log: warnings, and the plan cache's debug lines.
const LOG: &[(&str, &str)] = &[("BAOCAO_LOG", "warn,baocao::plan_cache=debug")];

const HIT: &str = "plan cache: hit";
const KEPT: &str = "plan cache: kept";

async fn number(client: &tokio_postgres::Client, sql: &str) -> f64 {
    client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

async fn value(
    client: &tokio_postgres::Client,
    lookup: &tokio_postgres::Statement,
    ward: &str,
) -> f64 {
    client
        .query_one(lookup, &[&ward, &"2025-06", &"births"])
        .await
        .expect("lookup")
        .get(0)
}

async fn top3(client: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    client
        .query(sql, &[])
        .await
        .expect("top")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn a_kept_plan_answers_the_newest_commit() {
    let w = TestWarehouse::demo("2025-06", "2025-06");
    let server = TestServer::start_with_env(&w, &[], LOG).await;
    let client = server.client().await;
    let first = client
        .query_one(
            "SELECT unit_code FROM reports WHERE period = '2025-06' AND indicator_code = 'births' \
             ORDER BY unit_code LIMIT 1",
            &[],
        )
        .await
        .expect("a ward that reported");
    let ward: String = first.get(0);

    // A prepared lookup with parameters, a roll-up and a top-k: each run
    // twice, the second time from its kept plan.
    let lookup = client
        .prepare(
            "SELECT value FROM reports WHERE unit_code = $1 AND period = $2 AND indicator_code = $3",
        )
        .await
        .expect("prepare");
    let city = "SELECT value FROM rollup WHERE unit_level = 'province' AND period = '2025-06' \
                AND indicator_code = 'births'";
    let top = "SELECT unit_code FROM reports WHERE period = '2025-06' AND indicator_code = 'births' \
               ORDER BY value DESC, unit_code LIMIT 3";
    let before = value(&client, &lookup, &ward).await;
    let city_before = number(&client, city).await;
    let top_before = top3(&client, top).await;
    assert_eq!(value(&client, &lookup, &ward).await, before);
    assert_eq!(number(&client, city).await, city_before);
    assert_eq!(top3(&client, top).await, top_before);
    // The first query, and the three.
    server.logged(KEPT, 4).await;
    server.logged(HIT, 3).await;

    // A correction that makes the ward the first of the city.
    let corrected = city_before + 1.0;
    client
        .execute(
            "INSERT INTO reports (unit_code, period, indicator_code, value) VALUES ($1, '2025-06', 'births', $2)",
            &[&ward, &corrected],
        )
        .await
        .expect("correction");
    assert_eq!(value(&client, &lookup, &ward).await, corrected);
    assert_eq!(
        number(&client, city).await,
        city_before - before + corrected
    );
    assert_eq!(top3(&client, top).await[0], ward);
    // The new version's plans were made afresh, then kept and reused.
    server.logged(KEPT, 7).await;
    assert_eq!(value(&client, &lookup, &ward).await, corrected);
    assert_eq!(top3(&client, top).await[0], ward);
    server.logged(HIT, 5).await;
}

#[tokio::test]
async fn sessions_with_other_rows_do_not_share_a_plan() {
    let w = TestWarehouse::demo_with_accounts("2025-06", "2025-06");
    let server = TestServer::start_with_env(&w, &[], LOG).await;
    let sql = "SELECT count(*)::float8 FROM reports WHERE period = '2025-06'";
    let admin = server.login("admin", "admin").await.expect("admin");
    let badinh = server.login("badinh", "badinh").await.expect("badinh");
    let phucxa = server.login("phucxa", "phucxa").await.expect("phucxa");
    let all = number(&admin, sql).await;
    let district = number(&badinh, sql).await;
    let ward = number(&phucxa, sql).await;
    assert!(
        all > district && district > ward && ward > 0.0,
        "{all} {district} {ward}"
    );
    // Each again, in another order: each session's own plan, kept.
    assert_eq!(number(&phucxa, sql).await, ward);
    assert_eq!(number(&badinh, sql).await, district);
    assert_eq!(number(&admin, sql).await, all);
    server.logged(KEPT, 3).await;
    server.logged(HIT, 3).await;
    // A second session of the same role shares its plan.
    let again = server.login("badinh", "badinh").await.expect("badinh");
    assert_eq!(number(&again, sql).await, district);
    server.logged(HIT, 4).await;
    assert_eq!(server.log_lines(KEPT).len(), 3);
}

#[tokio::test]
async fn what_moves_by_itself_is_planned_every_time() {
    let w = TestWarehouse::demo("2025-06", "2025-06");
    let server = TestServer::start_with_env(&w, &[], LOG).await;
    let client = server.client().await;
    // `now()` is folded into the plan when it is optimised.
    let sql = "SELECT now()::text, count(*) FROM reports WHERE period = '2025-06'";
    let first: String = client.query_one(sql, &[]).await.expect("now").get(0);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let second: String = client.query_one(sql, &[]).await.expect("now").get(0);
    assert_ne!(first, second);
    // A volatile function's value too.
    let sql = "SELECT random() FROM reports WHERE period = '2025-06' LIMIT 1";
    let a: f64 = client.query_one(sql, &[]).await.expect("random").get(0);
    let b: f64 = client.query_one(sql, &[]).await.expect("random").get(0);
    assert_ne!(a, b);
    // A table function's arguments are evaluated when the statement is
    // planned: `now()` there moves too.
    let sql = "SELECT max(value)::text FROM \
               generate_series(now() - interval '1 minute', now(), interval '1 second')";
    let first: String = client.query_one(sql, &[]).await.expect("series").get(0);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let second: String = client.query_one(sql, &[]).await.expect("series").get(0);
    assert_ne!(first, second);
    // None was kept: the next kept plan is the first.
    let sql = "SELECT count(*)::float8 FROM reports WHERE period = '2025-06'";
    let n = number(&client, sql).await;
    assert_eq!(number(&client, sql).await, n);
    let kept = server.logged(KEPT, 1).await;
    assert!(kept[0].contains("(1 in all)"), "{kept:?}");
    server.logged(HIT, 1).await;
}

#[tokio::test]
async fn a_statement_with_session_values_is_planned_for_each_session() {
    let w = TestWarehouse::demo_with_accounts("2025-06", "2025-06");
    let server = TestServer::start_with_env(&w, &[], LOG).await;
    let admin = server.login("admin", "admin").await.expect("admin");
    let analyst = server.login("analyst", "analyst").await.expect("analyst");
    admin
        .batch_execute("SET application_name = 'first'")
        .await
        .expect("set");
    analyst
        .batch_execute("SET application_name = 'second'")
        .await
        .expect("set");
    // The same text, over both protocols, twice each: every answer is
    // the session's own.
    let sql = "SELECT current_setting('application_name') || ' ' || current_user, \
               count(*) FROM reports WHERE period = '2025-06'";
    for _ in 0..2 {
        for (client, expected) in [(&admin, "first admin"), (&analyst, "second analyst")] {
            let row = client.query_one(sql, &[]).await.expect("extended");
            assert_eq!(row.get::<_, String>(0), expected);
            let simple = client.simple_query(sql).await.expect("simple");
            let value = simple.iter().find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                _ => None,
            });
            assert_eq!(value.as_deref(), Some(expected));
        }
    }
    // Without session values, the statement's plan is shared, and so is
    // the physical plan for sessions that read the same rows.
    let sql = "SELECT count(*)::float8 FROM reports WHERE period = '2025-06'";
    let n = number(&admin, sql).await;
    assert_eq!(number(&analyst, sql).await, n);
    server.logged(HIT, 1).await;
}
