//! What only an admin may do over SQL: manage accounts, and change the
//! engine's settings.
//!
//! Role statements, in PostgreSQL's words where it has them:
//!
//! ```sql
//! CREATE ROLE name [WITH] LOGIN PASSWORD 'secret'   -- or CREATE USER
//! ALTER ROLE name [WITH] PASSWORD 'secret'          -- an account may change its own
//! DROP ROLE [IF EXISTS] name [, ...]                -- or DROP USER
//! GRANT analyst TO name                             -- admin, analyst, etl
//! GRANT viewer ON UNIT '001' TO name                -- reporter, viewer: bound to a unit
//! REVOKE viewer ON UNIT '001' FROM name
//! ```
//!
//! An account holds one role; a GRANT replaces the role it had. They are
//! recognised from the statement's text before the SQL parser sees it (its
//! PostgreSQL dialect has no `ON UNIT`), in both protocols: over the
//! extended one, Parse keeps the text without a plan and Execute runs it.
//!
//! The settings guard: `SET datafusion.*` names the engine shared by every
//! session (memory limit, parallelism), so only an admin may send it (it
//! is kept as a session setting and changes nothing in the engine, whose
//! settings come from the server's flags); and a non-admin may shorten
//! `statement_timeout` but not lift the server's.

use async_trait::async_trait;
use baocao_access::{
    Access, AccessError, AccountStore, AuditEvent, AuditLog, AuditRecord, Grant, RoleKind, Stamp,
};
use baocao_catalog::Catalog;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{Set, Statement};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use datafusion_postgres::hooks::{HookClient, QueryHook};
use pgwire::api::ClientInfo;
use pgwire::api::results::{Response, Tag};
use pgwire::error::{PgWireError, PgWireResult};
use std::sync::Arc;

use crate::sqlstate::{self, user_error};

/// A session's rights, and the accounts they were read from.
pub struct SessionAccess {
    access: Arc<Access>,
    /// `None` for a trusted session (no accounts are read).
    stamp: Option<Option<Stamp>>,
}

impl SessionAccess {
    /// Rights read from the accounts as they were at `stamp`.
    pub fn from_accounts(access: Access, stamp: Option<Stamp>) -> SessionAccess {
        SessionAccess {
            access: Arc::new(access),
            stamp: Some(stamp),
        }
    }

    pub fn access(&self) -> &Access {
        &self.access
    }

    /// Rights that do not depend on the accounts (trust).
    pub fn trusted(access: Access) -> SessionAccess {
        SessionAccess {
            access: Arc::new(access),
            stamp: None,
        }
    }
}

/// The session's rights, as of the start of its current statement.
pub fn access_of(client: &(impl ClientInfo + ?Sized)) -> PgWireResult<Arc<Access>> {
    client
        .session_extensions()
        .get::<SessionAccess>()
        .map(|s| s.access.clone())
        .ok_or_else(|| {
            user_error(
                sqlstate::INVALID_AUTHORIZATION,
                "the session has not logged in".to_string(),
            )
        })
}

/// The session's rights for the statement starting now: read again when
/// the accounts changed since (a GRANT, REVOKE or DROP ROLE by another
/// session or server applies to this session's next statement, as
/// privileges do in PostgreSQL).
pub fn refresh_access(
    client: &(impl ClientInfo + ?Sized),
    accounts: &AccountStore,
    catalog: &Catalog,
) -> PgWireResult<Arc<Access>> {
    let session = client
        .session_extensions()
        .get::<SessionAccess>()
        .ok_or_else(|| {
            user_error(
                sqlstate::INVALID_AUTHORIZATION,
                "the session has not logged in".to_string(),
            )
        })?;
    let Some(seen) = session.stamp else {
        return Ok(session.access.clone());
    };
    let now = accounts.stamp();
    if now == seen {
        return Ok(session.access.clone());
    }
    let user = session.access.user().to_string();
    let loaded = accounts.load().map_err(|e| {
        user_error(
            sqlstate::INTERNAL_ERROR,
            format!("cannot read the accounts: {e}"),
        )
    })?;
    let Some(account) = loaded.get(&user) else {
        return Err(user_error(
            sqlstate::INVALID_AUTHORIZATION,
            format!("role \"{user}\" does not exist any more"),
        ));
    };
    let access = Access::new(&user, account.grant.clone(), catalog);
    let fresh = SessionAccess::from_accounts(access, now);
    let access = fresh.access.clone();
    client.session_extensions().insert(fresh);
    Ok(access)
}

fn denied(message: String) -> PgWireError {
    user_error(
        sqlstate::INSUFFICIENT_PRIVILEGE,
        format!("permission denied: {message}"),
    )
}

/// A role statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleStatement {
    Create {
        name: String,
        password: Option<String>,
    },
    AlterPassword {
        name: String,
        password: String,
    },
    Drop {
        names: Vec<String>,
        if_exists: bool,
    },
    Grant {
        name: String,
        role: RoleKind,
        unit: Option<String>,
    },
    Revoke {
        name: String,
        role: RoleKind,
        unit: Option<String>,
    },
}

impl RoleStatement {
    fn tag(&self) -> &'static str {
        match self {
            RoleStatement::Create { .. } => "CREATE ROLE",
            RoleStatement::AlterPassword { .. } => "ALTER ROLE",
            RoleStatement::Drop { .. } => "DROP ROLE",
            RoleStatement::Grant { .. } => "GRANT ROLE",
            RoleStatement::Revoke { .. } => "REVOKE ROLE",
        }
    }

    /// For the audit trail: the statement without its password.
    fn describe(&self) -> String {
        match self {
            RoleStatement::Create { name, .. } => format!("CREATE ROLE {name}"),
            RoleStatement::AlterPassword { name, .. } => format!("ALTER ROLE {name} PASSWORD"),
            RoleStatement::Drop { names, .. } => format!("DROP ROLE {}", names.join(", ")),
            RoleStatement::Grant { name, role, unit } => match unit {
                Some(u) => format!("GRANT {} ON UNIT '{u}' TO {name}", role.as_str()),
                None => format!("GRANT {} TO {name}", role.as_str()),
            },
            RoleStatement::Revoke { name, role, unit } => match unit {
                Some(u) => format!("REVOKE {} ON UNIT '{u}' FROM {name}", role.as_str()),
                None => format!("REVOKE {} FROM {name}", role.as_str()),
            },
        }
    }
}

/// Words and literals of one statement, without blanks and comments.
struct Words {
    tokens: Vec<Token>,
    at: usize,
}

impl Words {
    fn keyword(&mut self, word: &str) -> bool {
        match self.tokens.get(self.at) {
            Some(Token::Word(w))
                if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word) =>
            {
                self.at += 1;
                true
            }
            _ => false,
        }
    }

    fn expect(&mut self, word: &str) -> PgWireResult<()> {
        if self.keyword(word) {
            Ok(())
        } else {
            Err(syntax(&format!("expected {word}")))
        }
    }

    /// A role name: a word, quoted or not (unquoted names fold to lower
    /// case, as PostgreSQL folds them).
    fn name(&mut self) -> PgWireResult<String> {
        match self.tokens.get(self.at) {
            Some(Token::Word(w)) => {
                self.at += 1;
                Ok(if w.quote_style.is_some() {
                    w.value.clone()
                } else {
                    w.value.to_lowercase()
                })
            }
            _ => Err(syntax("expected a role name")),
        }
    }

    fn string(&mut self) -> PgWireResult<String> {
        match self.tokens.get(self.at) {
            Some(Token::SingleQuotedString(s)) | Some(Token::EscapedStringLiteral(s)) => {
                self.at += 1;
                Ok(s.clone())
            }
            _ => Err(syntax("expected a quoted string")),
        }
    }

    fn comma(&mut self) -> bool {
        if matches!(self.tokens.get(self.at), Some(Token::Comma)) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn end(&self) -> PgWireResult<()> {
        if self.at == self.tokens.len() {
            Ok(())
        } else {
            Err(syntax(&format!(
                "unexpected {} in a role statement",
                self.tokens[self.at]
            )))
        }
    }

    fn role_kind(&mut self) -> Option<RoleKind> {
        let Some(Token::Word(w)) = self.tokens.get(self.at) else {
            return None;
        };
        let kind = RoleKind::parse(&w.value).ok()?;
        self.at += 1;
        Some(kind)
    }
}

fn syntax(message: &str) -> PgWireError {
    user_error(
        sqlstate::SYNTAX_ERROR,
        format!(
            "{message}; role statements are CREATE ROLE name LOGIN PASSWORD '...', ALTER ROLE name PASSWORD '...', DROP ROLE name, GRANT role [ON UNIT 'code'] TO name, REVOKE role [ON UNIT 'code'] FROM name"
        ),
    )
}

/// The role statement `sql` is, if it is one.
pub fn recognize(sql: &str) -> Option<PgWireResult<RoleStatement>> {
    // Every role statement starts with one of these words: a text without
    // them is not one, and need not be tokenized.
    if !["create", "alter", "drop", "grant", "revoke"]
        .iter()
        .any(|word| contains_ignoring_case(sql, word))
    {
        return None;
    }
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize().ok()?;
    let mut tokens: Vec<Token> = tokens
        .into_iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .collect();
    while matches!(tokens.last(), Some(Token::SemiColon)) {
        tokens.pop();
    }
    if tokens.iter().any(|t| matches!(t, Token::SemiColon)) {
        // Several statements: not one of ours (the write guard refuses a
        // role statement among others).
        return None;
    }
    let mut w = Words { tokens, at: 0 };
    if w.keyword("create") {
        if !(w.keyword("role") || w.keyword("user")) {
            return None;
        }
        return Some(parse_create(&mut w));
    }
    if w.keyword("alter") {
        if !(w.keyword("role") || w.keyword("user")) {
            return None;
        }
        return Some(parse_alter(&mut w));
    }
    if w.keyword("drop") {
        if !(w.keyword("role") || w.keyword("user")) {
            return None;
        }
        return Some(parse_drop(&mut w));
    }
    let grant = if w.keyword("grant") {
        true
    } else if w.keyword("revoke") {
        false
    } else {
        return None;
    };
    // GRANT SELECT ON ... is not a role statement.
    let role = w.role_kind()?;
    Some(parse_grant(&mut w, grant, role))
}

/// Whether `text` holds `word` (ASCII, lower case) in any case.
fn contains_ignoring_case(text: &str, word: &str) -> bool {
    text.as_bytes()
        .windows(word.len())
        .any(|w| w.eq_ignore_ascii_case(word.as_bytes()))
}

fn parse_create(w: &mut Words) -> PgWireResult<RoleStatement> {
    let name = w.name()?;
    w.keyword("with");
    let mut password = None;
    loop {
        if w.keyword("login") {
            continue;
        }
        if w.keyword("password") {
            password = Some(w.string()?);
            continue;
        }
        if w.keyword("nologin") {
            return Err(user_error(
                sqlstate::FEATURE_NOT_SUPPORTED,
                "every role here is an account that logs in; NOLOGIN roles are not supported (the roles to grant are admin, analyst, etl, reporter and viewer)".to_string(),
            ));
        }
        break;
    }
    w.end()?;
    Ok(RoleStatement::Create { name, password })
}

fn parse_alter(w: &mut Words) -> PgWireResult<RoleStatement> {
    let name = w.name()?;
    w.keyword("with");
    if !w.keyword("password") {
        return Err(user_error(
            sqlstate::FEATURE_NOT_SUPPORTED,
            "ALTER ROLE changes only a password here: ALTER ROLE name PASSWORD '...'".to_string(),
        ));
    }
    let password = w.string()?;
    w.end()?;
    Ok(RoleStatement::AlterPassword { name, password })
}

fn parse_drop(w: &mut Words) -> PgWireResult<RoleStatement> {
    let if_exists = if w.keyword("if") {
        w.expect("exists")?;
        true
    } else {
        false
    };
    let mut names = vec![w.name()?];
    while w.comma() {
        names.push(w.name()?);
    }
    w.end()?;
    Ok(RoleStatement::Drop { names, if_exists })
}

fn parse_grant(w: &mut Words, grant: bool, role: RoleKind) -> PgWireResult<RoleStatement> {
    let unit = if w.keyword("on") {
        w.expect("unit")?;
        Some(w.string()?)
    } else {
        None
    };
    w.expect(if grant { "to" } else { "from" })?;
    let name = w.name()?;
    w.end()?;
    Ok(if grant {
        RoleStatement::Grant { name, role, unit }
    } else {
        RoleStatement::Revoke { name, role, unit }
    })
}

fn access_error(e: AccessError) -> PgWireError {
    let code = match &e {
        AccessError::Exists(_) => sqlstate::DUPLICATE_OBJECT,
        AccessError::Unknown(_) => sqlstate::UNDEFINED_OBJECT,
        AccessError::LastAdmin(_) | AccessError::NotHeld { .. } => "55000",
        AccessError::Io { .. } | AccessError::Corrupt { .. } | AccessError::Random => {
            sqlstate::INTERNAL_ERROR
        }
        _ => sqlstate::INVALID_PARAMETER_VALUE,
    };
    user_error(code, e.to_string())
}

/// Runs role statements against the warehouse's accounts.
pub struct Roles {
    pub accounts: AccountStore,
    pub catalog: Arc<Catalog>,
    pub audit: AuditLog,
}

impl Roles {
    /// Runs `statement` for the session `access`.
    pub fn run(
        &self,
        statement: RoleStatement,
        access: &Access,
        client: &(impl ClientInfo + ?Sized),
    ) -> PgWireResult<Response> {
        let own_password = matches!(&statement, RoleStatement::AlterPassword { name, .. } if name == access.user());
        if !access.is_admin() && !own_password {
            self.audit.record(
                AuditRecord::new(AuditEvent::Denied, access.user(), statement.describe())
                    .client(client.socket_addr()),
            );
            return Err(denied(format!(
                "only admins manage roles (role {} may change only its own password)",
                access.user()
            )));
        }
        let me = access.user();
        match &statement {
            RoleStatement::Create { name, password } => {
                let Some(password) = password else {
                    return Err(user_error(
                        sqlstate::INVALID_PARAMETER_VALUE,
                        format!(
                            "role \"{name}\" needs a password: CREATE ROLE {name} LOGIN PASSWORD '...'"
                        ),
                    ));
                };
                self.accounts
                    .update(|a| a.add(name, password, None))
                    .map_err(access_error)?;
            }
            RoleStatement::AlterPassword { name, password } => {
                self.accounts
                    .update(|a| a.set_password(name, password))
                    .map_err(access_error)?;
            }
            RoleStatement::Drop { names, if_exists } => {
                if names.iter().any(|n| n == me) {
                    return Err(user_error(
                        "55006",
                        "current user cannot be dropped".to_string(),
                    ));
                }
                self.accounts
                    .update(|a| {
                        for name in names {
                            match a.remove(name) {
                                Err(AccessError::Unknown(_)) if *if_exists => {}
                                other => other?,
                            }
                        }
                        Ok(())
                    })
                    .map_err(access_error)?;
            }
            RoleStatement::Grant { name, role, unit } => {
                let grant =
                    Grant::new(*role, unit.as_deref(), &self.catalog).map_err(access_error)?;
                self.accounts
                    .update(|a| a.grant(name, Some(grant)))
                    .map_err(access_error)?;
            }
            RoleStatement::Revoke { name, role, unit } => {
                let grant = Grant {
                    role: *role,
                    unit: unit.clone(),
                };
                self.accounts
                    .update(|a| a.revoke(name, &grant))
                    .map_err(access_error)?;
            }
        }
        self.audit.record(
            AuditRecord::new(AuditEvent::Admin, me, statement.describe())
                .client(client.socket_addr()),
        );
        Ok(Response::Execution(Tag::new(statement.tag())))
    }
}

/// Refuses, for non-admins, the settings that reach past the session.
pub struct SettingsGuard {
    /// The server's default `statement_timeout` in ms (0: none).
    pub statement_timeout_ms: u64,
}

/// The `statement_timeout` a SET leaves, read exactly as datafusion-postgres
/// (which applies it) reads it: a number of ms, or with `ms`, `s` or `min`;
/// `None` when it leaves none — 0, or anything it cannot read (`DEFAULT`,
/// `'1 ms'`, `-1`), which it takes as no limit.
fn timeout_ms(value: &str) -> Option<u64> {
    let v = value.trim_matches('"').trim_matches('\'');
    if v == "0" || v.is_empty() {
        return None;
    }
    let ms = if let Some(n) = v.strip_suffix("ms") {
        n.parse::<u64>()
    } else if let Some(n) = v.strip_suffix('s') {
        n.parse::<u64>().map(|s| s * 1000)
    } else if let Some(n) = v.strip_suffix("min") {
        n.parse::<u64>().map(|m| m * 60 * 1000)
    } else {
        v.parse::<u64>()
    };
    ms.ok().filter(|ms| *ms > 0)
}

impl SettingsGuard {
    fn check(
        &self,
        statement: &Statement,
        client: &(impl ClientInfo + ?Sized),
    ) -> PgWireResult<()> {
        let Statement::Set(Set::SingleAssignment {
            variable, values, ..
        }) = statement
        else {
            return Ok(());
        };
        let access = access_of(client)?;
        if access.is_admin() {
            return Ok(());
        }
        let name = variable.to_string().to_lowercase();
        if name.starts_with("datafusion.") {
            return Err(denied(format!(
                "{name} is an engine setting shared by every session; only admins may set it"
            )));
        }
        if name == "statement_timeout" && self.statement_timeout_ms > 0 {
            let value = values.first().map(|v| v.to_string()).unwrap_or_default();
            let lifted = timeout_ms(&value).is_none_or(|ms| ms > self.statement_timeout_ms);
            if lifted {
                return Err(denied(format!(
                    "the server limits statements to {} ms; a session may shorten statement_timeout, not lift it",
                    self.statement_timeout_ms
                )));
            }
        }
        Ok(())
    }
}

#[async_trait]
impl QueryHook for SettingsGuard {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        self.check(statement, &*client).err().map(Err)
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        self.check(statement, client).err().map(Err)
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        _ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        self.check(statement, &*client).err().map(Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_statements_are_recognized() {
        let r = |s: &str| recognize(s).map(|r| r.map_err(|e| e.to_string()));
        assert_eq!(
            r("CREATE ROLE Alice WITH LOGIN PASSWORD 'p''w';"),
            Some(Ok(RoleStatement::Create {
                name: "alice".into(),
                password: Some("p'w".into())
            }))
        );
        assert_eq!(
            r("create user \"Bob\" password 'x'"),
            Some(Ok(RoleStatement::Create {
                name: "Bob".into(),
                password: Some("x".into())
            }))
        );
        assert_eq!(
            r("GRANT viewer ON UNIT '001' TO alice"),
            Some(Ok(RoleStatement::Grant {
                name: "alice".into(),
                role: RoleKind::Viewer,
                unit: Some("001".into())
            }))
        );
        assert_eq!(
            r("revoke analyst from alice"),
            Some(Ok(RoleStatement::Revoke {
                name: "alice".into(),
                role: RoleKind::Analyst,
                unit: None
            }))
        );
        assert_eq!(
            r("DROP ROLE IF EXISTS a, b"),
            Some(Ok(RoleStatement::Drop {
                names: vec!["a".into(), "b".into()],
                if_exists: true
            }))
        );
        assert_eq!(
            r("ALTER ROLE alice PASSWORD 'n'"),
            Some(Ok(RoleStatement::AlterPassword {
                name: "alice".into(),
                password: "n".into()
            }))
        );
        assert!(r("GRANT SELECT ON reports TO alice").is_none());
        assert!(r("SELECT 1").is_none());
        assert!(r("CREATE TABLE t (a int)").is_none());
        assert!(r("CREATE ROLE a; SELECT 1").is_none());
        assert!(matches!(r("GRANT viewer TO"), Some(Err(_))));
        assert!(matches!(r("ALTER ROLE a RENAME TO b"), Some(Err(_))));
    }

    #[test]
    fn statement_timeouts_are_read_as_datafusion_postgres_applies_them() {
        assert_eq!(timeout_ms("5000"), Some(5000));
        assert_eq!(timeout_ms("'5s'"), Some(5000));
        assert_eq!(timeout_ms("'2min'"), Some(120_000));
        assert_eq!(timeout_ms("'250ms'"), Some(250));
        // What it cannot read, it takes as no limit.
        for none in ["0", "DEFAULT", "'1 ms'", "-1", "'abc'", "''"] {
            assert_eq!(timeout_ms(none), None, "{none}");
        }
    }
}
