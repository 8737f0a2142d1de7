//! Session settings as PostgreSQL has them: `SET`, `SHOW`, `RESET`,
//! `SET SESSION CHARACTERISTICS AS TRANSACTION ...`, `DISCARD ALL`,
//! `DEALLOCATE`, and the values `current_setting()` reads.
//!
//! Values live in the connection's metadata (lower-case names), where
//! datafusion-postgres' encoder also reads the formatting ones (DateStyle,
//! IntervalStyle, bytea_output, extra_float_digits). `statement_timeout`
//! and `TimeZone` are left to datafusion-postgres' `SetShowHook`, which
//! acts on them.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::{DFSchema, ParamValues};
use datafusion::logical_expr::{EmptyRelation, LogicalPlan};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    DiscardObject, Expr, Reset, Set, Statement, TransactionMode, Value,
};
use datafusion_postgres::hooks::{HookClient, QueryHook};
use pgwire::api::ClientInfo;
use pgwire::api::Type;
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::store::PortalStore;
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::startup::ParameterStatus;

use crate::sqlstate::{self, df_error, user_error};

/// The PostgreSQL release baocao answers as: clients parse it (SQLAlchemy,
/// asyncpg, pgjdbc) and pick their SQL by it.
pub const SERVER_VERSION: &str = "16.6";
pub const SERVER_VERSION_NUM: &str = "160006";

/// PostgreSQL's name, default, and whether a change is reported to the
/// client (`GUC_REPORT`), for the parameters clients read.
const PARAMETERS: &[(&str, &str, bool)] = &[
    ("application_name", "", true),
    ("block_size", "8192", false),
    ("bytea_output", "hex", false),
    ("client_encoding", "UTF8", true),
    ("client_min_messages", "notice", false),
    ("DateStyle", "ISO, MDY", true),
    ("default_transaction_isolation", "read committed", false),
    ("default_transaction_read_only", "off", true),
    ("extra_float_digits", "1", false),
    ("idle_in_transaction_session_timeout", "0", false),
    ("in_hot_standby", "off", true),
    ("integer_datetimes", "on", true),
    ("IntervalStyle", "postgres", true),
    ("is_superuser", "off", true),
    ("jit", "off", false),
    ("lc_collate", "C.UTF-8", false),
    ("lc_ctype", "C.UTF-8", false),
    ("lc_messages", "C.UTF-8", false),
    ("lc_monetary", "C.UTF-8", false),
    ("lc_numeric", "C.UTF-8", false),
    ("lc_time", "C.UTF-8", false),
    ("lock_timeout", "0", false),
    ("max_connections", "100", false),
    ("max_identifier_length", "63", false),
    ("max_index_keys", "32", false),
    ("search_path", "\"$user\", public", false),
    ("server_encoding", "UTF8", true),
    ("server_version", SERVER_VERSION, true),
    ("server_version_num", SERVER_VERSION_NUM, false),
    ("standard_conforming_strings", "on", true),
    ("synchronous_commit", "on", false),
    ("transaction_isolation", "read committed", false),
    ("transaction_read_only", "off", false),
];

/// Parameters datafusion-postgres acts on; it owns their SET and SHOW.
fn owned_by_datafusion_postgres(name: &str) -> bool {
    name == "statement_timeout"
}

/// `SET timezone = 'X'`: for this session only. (datafusion-postgres
/// would hand it to the engine's shared configuration, changing every
/// session's time zone.)
fn is_time_zone(name: &str) -> bool {
    matches!(name, "timezone" | "time zone")
}

fn parameter(name: &str) -> Option<&'static (&'static str, &'static str, bool)> {
    PARAMETERS.iter().find(|p| p.0.eq_ignore_ascii_case(name))
}

/// The session's value of `name`, or its default; `None` for a parameter
/// PostgreSQL does not know either.
pub fn value(client: &(dyn ClientInfo + Send + Sync), name: &str) -> Option<String> {
    let key = name.to_lowercase();
    if let Some(v) = client.metadata().get(&key) {
        return Some(v.clone());
    }
    match key.as_str() {
        "timezone" => Some("UTC".to_string()),
        "statement_timeout" => Some("0".to_string()),
        "session_authorization" => client.metadata().get(pgwire::api::METADATA_USER).cloned(),
        _ => parameter(&key).map(|p| p.1.to_string()),
    }
}

/// Connection facts and internal keys kept in the same metadata as the
/// settings, which a session may not change: `user` and `database` are who
/// it logged in as (its submissions are recorded under that name), and
/// `statement_timeout_ms` is where `statement_timeout` is kept (set
/// directly, it would escape the server's limit).
fn reserved(key: &str) -> bool {
    matches!(key, "user" | "database") || key == super::STATEMENT_TIMEOUT_MS
}

fn cannot_change(name: &str) -> PgWireError {
    user_error("55P02", format!("parameter \"{name}\" cannot be changed"))
}

/// Sets `name` for the session, telling the client when PostgreSQL would.
pub async fn set(client: &mut dyn HookClient, name: &str, value: &str) -> PgWireResult<()> {
    let key = name.to_lowercase();
    if reserved(&key) {
        return Err(cannot_change(name));
    }
    client.metadata_mut().insert(key.clone(), value.to_string());
    if let Some((canonical, _, true)) = parameter(&key) {
        client
            .send_message(PgWireBackendMessage::ParameterStatus(ParameterStatus::new(
                canonical.to_string(),
                value.to_string(),
            )))
            .await?;
    }
    Ok(())
}

pub fn unrecognized(name: &str) -> PgWireError {
    user_error(
        sqlstate::UNDEFINED_OBJECT,
        format!("unrecognized configuration parameter \"{name}\""),
    )
}

/// The text of a SET value as PostgreSQL keeps it: `'a'` → a, `on` → on,
/// a list joined with ", ".
fn set_value(values: &[Expr]) -> String {
    values
        .iter()
        .map(|v| match v {
            Expr::Value(v) => match &v.value {
                Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
                other => other.to_string(),
            },
            Expr::Identifier(i) => i.value.clone(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A one-row, one-column text result.
fn show_response(name: &str, value: &str) -> PgWireResult<Response> {
    let fields = Arc::new(vec![FieldInfo::new(
        name.to_string(),
        None,
        None,
        Type::TEXT,
        FieldFormat::Text,
    )]);
    let mut encoder = DataRowEncoder::new(fields.clone());
    encoder.encode_field(&Some(value))?;
    let row = encoder.take_row();
    Ok(Response::Query(QueryResponse::new(
        fields,
        Box::pin(futures::stream::once(async move { Ok(row) })),
    )))
}

/// All parameters, as `SHOW ALL` gives them (name, setting, description).
fn show_all(client: &(dyn ClientInfo + Send + Sync)) -> PgWireResult<Response> {
    let fields = Arc::new(
        ["name", "setting", "description"]
            .into_iter()
            .map(|n| FieldInfo::new(n.to_string(), None, None, Type::TEXT, FieldFormat::Text))
            .collect::<Vec<_>>(),
    );
    let mut rows = Vec::new();
    for (name, _, _) in PARAMETERS {
        let mut encoder = DataRowEncoder::new(fields.clone());
        encoder.encode_field(&Some(*name))?;
        encoder.encode_field(&value(client, name))?;
        encoder.encode_field(&Some(""))?;
        rows.push(Ok(encoder.take_row()));
    }
    Ok(Response::Query(QueryResponse::new(
        fields,
        Box::pin(futures::stream::iter(rows)),
    )))
}

/// The statement's one-column result schema at Parse time, if it is a SHOW
/// this module answers.
fn show_name(statement: &Statement) -> Option<String> {
    let Statement::ShowVariable { variable } = statement else {
        return None;
    };
    let words: Vec<String> = variable.iter().map(|v| v.value.to_lowercase()).collect();
    let name = match words.as_slice() {
        [w] if w == "all" => "all".to_string(),
        [a, b, c] if a == "transaction" && b == "isolation" && c == "level" => {
            "transaction_isolation".to_string()
        }
        [w] => w.clone(),
        _ => words.join(" "),
    };
    (!owned_by_datafusion_postgres(&name)).then_some(name)
}

/// SET, SHOW, RESET, DISCARD and DEALLOCATE, in both protocols.
pub struct SettingsHook;

impl SettingsHook {
    async fn respond(
        &self,
        statement: &Statement,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        if let Some(name) = show_name(statement) {
            return Some(if name == "all" {
                show_all(&*client)
            } else {
                match value(&*client, &name) {
                    Some(v) => {
                        let column = parameter(&name).map(|p| p.0).unwrap_or(&name);
                        show_response(column, &v)
                    }
                    None => Err(unrecognized(&name)),
                }
            });
        }
        match statement {
            Statement::Set(Set::SingleAssignment {
                variable, values, ..
            }) => {
                let name = variable.to_string().to_lowercase();
                if owned_by_datafusion_postgres(&name) {
                    return None;
                }
                if is_time_zone(&name) {
                    let zone = set_value(values);
                    let zone = if zone.eq_ignore_ascii_case("default")
                        || zone.eq_ignore_ascii_case("local")
                    {
                        "UTC".to_string()
                    } else {
                        zone
                    };
                    // datafusion-postgres reads the session's zone from here.
                    client
                        .metadata_mut()
                        .insert("timezone".to_string(), zone.clone());
                    let status = client
                        .send_message(PgWireBackendMessage::ParameterStatus(ParameterStatus::new(
                            "TimeZone".to_string(),
                            zone,
                        )))
                        .await;
                    return Some(status.map(|()| set_tag()));
                }
                let text = set_value(values);
                let text = if text.eq_ignore_ascii_case("default") {
                    parameter(&name)
                        .map(|p| p.1.to_string())
                        .unwrap_or_default()
                } else {
                    text
                };
                Some(set(client, &name, &text).await.map(|_| set_tag()))
            }
            Statement::Set(Set::SetTransaction { modes, session, .. }) => {
                for mode in modes {
                    let (name, value) = match mode {
                        TransactionMode::IsolationLevel(level) => {
                            ("transaction_isolation", level.to_string().to_lowercase())
                        }
                        TransactionMode::AccessMode(access) => (
                            "transaction_read_only",
                            if access.to_string().eq_ignore_ascii_case("read only") {
                                "on".to_string()
                            } else {
                                "off".to_string()
                            },
                        ),
                    };
                    if let Err(e) = set(client, name, &value).await {
                        return Some(Err(e));
                    }
                    if *session
                        && let Err(e) = set(client, &format!("default_{name}"), &value).await
                    {
                        return Some(Err(e));
                    }
                }
                Some(Ok(set_tag()))
            }
            Statement::Set(Set::SetNames { .. }) => Some(Ok(set_tag())),
            Statement::Reset(reset) => {
                let names: Vec<String> = match &reset.reset {
                    Reset::ALL => PARAMETERS.iter().map(|p| p.0.to_lowercase()).collect(),
                    Reset::ConfigurationParameter(name) => vec![name.to_string().to_lowercase()],
                };
                if let Some(name) = names.iter().find(|n| reserved(n)) {
                    return Some(Err(cannot_change(name)));
                }
                for name in names {
                    client.metadata_mut().remove(&name);
                }
                Some(Ok(Response::Execution(Tag::new("RESET"))))
            }
            Statement::Discard { object_type } => {
                if matches!(object_type, DiscardObject::ALL) {
                    for (name, _, _) in PARAMETERS {
                        client.metadata_mut().remove(&name.to_lowercase());
                    }
                    client.portal_store().clear_portals();
                }
                Some(Ok(Response::Execution(Tag::new(&format!(
                    "DISCARD {object_type}"
                )))))
            }
            Statement::Deallocate { name, .. } => {
                // DEALLOCATE ALL cannot list pgwire's statement store; a
                // client that deallocated all re-Parses under the same
                // names, which replaces the old entries.
                if !name.value.eq_ignore_ascii_case("all") {
                    client.portal_store().rm_statement(&name.value);
                    return Some(Ok(Response::Execution(Tag::new("DEALLOCATE"))));
                }
                Some(Ok(Response::Execution(Tag::new("DEALLOCATE ALL"))))
            }
            _ => None,
        }
    }
}

fn set_tag() -> Response {
    Response::Execution(Tag::new("SET"))
}

fn empty_plan(fields: Vec<Field>) -> PgWireResult<LogicalPlan> {
    let schema = DFSchema::try_from(Schema::new(fields)).map_err(df_error)?;
    Ok(LogicalPlan::EmptyRelation(EmptyRelation {
        produce_one_row: true,
        schema: Arc::new(schema),
    }))
}

#[async_trait]
impl QueryHook for SettingsHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        self.respond(statement, client).await
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        if let Some(name) = show_name(statement) {
            let fields = if name == "all" {
                ["name", "setting", "description"]
                    .into_iter()
                    .map(|n| Field::new(n, DataType::Utf8, true))
                    .collect()
            } else {
                let column = parameter(&name).map(|p| p.0).unwrap_or(&name);
                vec![Field::new(column, DataType::Utf8, true)]
            };
            return Some(empty_plan(fields));
        }
        match statement {
            Statement::Set(Set::SingleAssignment { variable, .. })
                if owned_by_datafusion_postgres(&variable.to_string().to_lowercase()) =>
            {
                None
            }
            Statement::Set(
                Set::SingleAssignment { .. } | Set::SetTransaction { .. } | Set::SetNames { .. },
            )
            | Statement::Reset(_)
            | Statement::Discard { .. }
            | Statement::Deallocate { .. } => Some(empty_plan(Vec::new())),
            _ => None,
        }
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _logical_plan: &LogicalPlan,
        _params: &ParamValues,
        _ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        self.respond(statement, client).await
    }
}
