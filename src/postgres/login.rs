//! Authentication: who a connection is, before it may send a statement.
//!
//! - `scram-sha-256` (the default once the warehouse has accounts): the
//!   client proves it knows the password against the verifier kept in
//!   `access/accounts.json`; the password never crosses the wire. An
//!   unknown user goes through the same exchange against a decoy verifier,
//!   so the server does not tell which names exist.
//! - `password`: the password in clear text, checked against the same
//!   verifier — only when the operator asks for it (and, sensibly, with
//!   TLS). MD5 is not offered: it needs a password-equivalent hash that the
//!   warehouse does not keep.
//! - `trust`: no password, every client is an admin — for a warehouse
//!   without accounts, on a loopback address only (the server refuses
//!   anything else at start).
//!
//! With `--require-tls`, a connection that did not negotiate TLS is refused
//! before authentication, as PostgreSQL's `hostssl` does.
//!
//! A successful login leaves the session's [`Access`] in its extensions:
//! statements read it (row scope, write checks, role statements).

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use baocao_access::{
    Access, AccountStore, AuditEvent, AuditLog, AuditRecord, Exchange, ScramError, Verifier,
};
use baocao_catalog::Catalog;
use futures::{Sink, SinkExt};
use pgwire::api::auth::{DefaultServerParameterProvider, StartupHandler};
use pgwire::api::{
    ClientInfo, PgWireConnectionState, PidSecretKeyGenerator, RandomPidSecretKeyGenerator,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use tokio::sync::Mutex;

use super::privileges::SessionAccess;
use crate::sqlstate;

/// How clients prove who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    #[value(name = "scram-sha-256")]
    Scram,
    /// Cleartext password (use with TLS).
    Password,
    /// No password; every client is an admin (loopback, no accounts).
    Trust,
}

/// What every connection's login needs.
pub struct LoginPolicy {
    /// `None`: scram-sha-256 when the warehouse has accounts, trust when it
    /// has none (checked at each login: the first account made turns
    /// passwords on).
    pub method: Option<Method>,
    /// Whether the server listens on a loopback address only (trust is
    /// refused otherwise).
    pub loopback: bool,
    pub require_tls: bool,
    pub accounts: AccountStore,
    pub catalog: Arc<Catalog>,
    pub audit: AuditLog,
    /// Where cancel requests find this server's sessions.
    pub cancels: Arc<super::cancel::Cancels>,
    /// Every session's `statement_timeout` until it sets one (0: none).
    pub statement_timeout_ms: u64,
    /// Salts the decoy verifiers of unknown users (random per server).
    pub decoy_secret: [u8; 32],
}

/// One connection's login (pgwire asks for a startup handler per
/// connection, so the exchange's state is this connection's own).
pub struct Login {
    policy: Arc<LoginPolicy>,
    /// The method this connection logs in with, once its startup came.
    method: std::sync::OnceLock<Method>,
    exchange: Mutex<Option<Exchange>>,
}

impl Login {
    pub fn new(policy: Arc<LoginPolicy>) -> Login {
        Login {
            policy,
            method: std::sync::OnceLock::new(),
            exchange: Mutex::new(None),
        }
    }

    /// The method for a connection starting now.
    fn method_now(&self) -> PgWireResult<Method> {
        let method = match self.policy.method {
            Some(m) => m,
            None => {
                let accounts = self.policy.accounts.load().map_err(|e| {
                    fatal(
                        sqlstate::INTERNAL_ERROR,
                        format!("cannot read the accounts: {e}"),
                    )
                })?;
                if accounts.is_empty() {
                    Method::Trust
                } else {
                    Method::Scram
                }
            }
        };
        if method == Method::Trust && !self.policy.loopback {
            return Err(fatal(
                sqlstate::INVALID_AUTHORIZATION,
                "this server listens beyond this machine and trusts no one without a password, but its warehouse has no accounts: an operator must create one (baocao user add NAME --admin)".to_string(),
            ));
        }
        Ok(method)
    }
}

fn fatal(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".to_string(),
        code.to_string(),
        message,
    )))
}

fn user_of(client: &(impl ClientInfo + ?Sized)) -> Option<String> {
    client
        .metadata()
        .get(pgwire::api::METADATA_USER)
        .cloned()
        .filter(|u| !u.is_empty())
}

impl Login {
    fn record(
        &self,
        client: &(impl ClientInfo + ?Sized),
        event: AuditEvent,
        user: &str,
        detail: String,
    ) {
        self.policy
            .audit
            .record(AuditRecord::new(event, user, detail).client(client.socket_addr()));
    }

    /// The refusal of a login, recorded.
    fn refuse(&self, client: &(impl ClientInfo + ?Sized), user: &str, why: &str) -> PgWireError {
        self.record(client, AuditEvent::LoginFailed, user, why.to_string());
        // PostgreSQL's message: it does not say whether the user exists.
        fatal(
            "28P01",
            format!("password authentication failed for user \"{user}\""),
        )
    }

    /// The verifier `user` logs in with: its account's, or a decoy.
    fn verifier(&self, user: &str) -> PgWireResult<(Verifier, bool)> {
        let accounts = self.policy.accounts.load().map_err(|e| {
            fatal(
                sqlstate::INTERNAL_ERROR,
                format!("cannot read the accounts: {e}"),
            )
        })?;
        match accounts.get(user).map(|a| a.verifier()) {
            Some(Ok(v)) => Ok((v, true)),
            Some(Err(e)) => {
                tracing::error!(user, "the account's verifier is unreadable: {e}");
                Ok((Verifier::decoy(user, &self.policy.decoy_secret), false))
            }
            None => Ok((Verifier::decoy(user, &self.policy.decoy_secret), false)),
        }
    }

    /// The rights of `user`, read from the accounts now.
    fn access(&self, user: &str) -> PgWireResult<SessionAccess> {
        if self.method.get() == Some(&Method::Trust) {
            return Ok(SessionAccess::trusted(Access::trusted(user)));
        }
        // The stamp before the read: a change in between is read again at
        // the first statement.
        let stamp = self.policy.accounts.stamp();
        let accounts = self.policy.accounts.load().map_err(|e| {
            fatal(
                sqlstate::INTERNAL_ERROR,
                format!("cannot read the accounts: {e}"),
            )
        })?;
        let grant = accounts.get(user).and_then(|a| a.grant.clone());
        Ok(SessionAccess::from_accounts(
            Access::new(user, grant, &self.policy.catalog),
            stamp,
        ))
    }

    /// Ends a successful login: the connection gets its cancel key, its
    /// rights and its settings, and is ready for statements.
    async fn admit<C>(&self, client: &mut C, user: &str, how: &str) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = self.access(user)?;
        let (pid, secret_key) = RandomPidSecretKeyGenerator::default().generate(client);
        client.set_pid_and_secret_key(pid, secret_key.clone());
        let registration = self
            .policy
            .cancels
            .register(pid, &secret_key, client.socket_addr());
        client.session_extensions().insert(registration);
        if self.policy.statement_timeout_ms > 0 {
            client.metadata_mut().insert(
                super::STATEMENT_TIMEOUT_MS.to_string(),
                self.policy.statement_timeout_ms.to_string(),
            );
        }
        let mut parameters = DefaultServerParameterProvider::default();
        parameters.is_superuser = session.access().is_admin();
        let role = session
            .access()
            .grant()
            .map(|g| g.to_string())
            .unwrap_or_else(|| "no role".to_string());
        client.session_extensions().insert(session);
        self.record(client, AuditEvent::Login, user, format!("{how}; {role}"));
        pgwire::api::auth::finish_authentication(client, &parameters).await
    }
}

#[async_trait]
impl StartupHandler for Login {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                pgwire::api::auth::protocol_negotiation(client, startup).await?;
                pgwire::api::auth::save_startup_parameters_to_metadata(client, startup);
                let Some(user) = user_of(client) else {
                    return Err(fatal(
                        sqlstate::INVALID_AUTHORIZATION,
                        "no user name in the startup packet".to_string(),
                    ));
                };
                if self.policy.require_tls && !client.is_secure() {
                    self.record(
                        client,
                        AuditEvent::LoginFailed,
                        &user,
                        "plaintext connection refused".into(),
                    );
                    return Err(fatal(
                        sqlstate::INVALID_AUTHORIZATION,
                        format!(
                            "no encryption: this server accepts TLS connections only, and user \"{user}\" connected without (connect with sslmode=require)"
                        ),
                    ));
                }
                let method = self.method_now()?;
                let _ = self.method.set(method);
                match method {
                    Method::Trust => self.admit(client, &user, "trust").await?,
                    Method::Scram => {
                        client.set_state(PgWireConnectionState::AuthenticationInProgress);
                        client
                            .send(PgWireBackendMessage::Authentication(Authentication::SASL(
                                vec!["SCRAM-SHA-256".to_string()],
                            )))
                            .await?;
                    }
                    Method::Password => {
                        client.set_state(PgWireConnectionState::AuthenticationInProgress);
                        client
                            .send(PgWireBackendMessage::Authentication(
                                Authentication::CleartextPassword,
                            ))
                            .await?;
                    }
                }
            }
            PgWireFrontendMessage::PasswordMessageFamily(message) => {
                if !matches!(
                    client.state(),
                    PgWireConnectionState::AuthenticationInProgress
                ) {
                    return Err(fatal(
                        "08P01",
                        "a password message outside authentication".to_string(),
                    ));
                }
                let user = user_of(client).unwrap_or_default();
                match self.method.get().copied().unwrap_or(Method::Scram) {
                    Method::Trust => {}
                    Method::Password => {
                        let password = message.into_password()?;
                        // The check runs for unknown users too (against the
                        // decoy), so its time does not tell who exists.
                        let (verifier, known) = self.verifier(&user)?;
                        let matches = verifier.matches(&password.password);
                        if known && matches {
                            self.admit(client, &user, "password").await?;
                        } else {
                            return Err(self.refuse(
                                client,
                                &user,
                                "wrong password or unknown user",
                            ));
                        }
                    }
                    Method::Scram => {
                        let mut exchange = self.exchange.lock().await;
                        match exchange.take() {
                            None => {
                                let first = message.into_sasl_initial_response()?;
                                if first.auth_method != "SCRAM-SHA-256" {
                                    return Err(fatal(
                                        sqlstate::INVALID_AUTHORIZATION,
                                        format!(
                                            "authentication method {:?} is not offered; use SCRAM-SHA-256",
                                            first.auth_method
                                        ),
                                    ));
                                }
                                let data = first.data.unwrap_or_default();
                                let text = std::str::from_utf8(&data).map_err(|_| {
                                    fatal("08P01", "malformed SCRAM message: not UTF-8".into())
                                })?;
                                let (verifier, _) = self.verifier(&user)?;
                                let started = Exchange::start(text, verifier)
                                    .map_err(|e| scram_error(self, client, &user, e))?;
                                let server_first = started.server_first().as_bytes().to_vec();
                                *exchange = Some(started);
                                client
                                    .send(PgWireBackendMessage::Authentication(
                                        Authentication::SASLContinue(server_first.into()),
                                    ))
                                    .await?;
                            }
                            Some(started) => {
                                drop(exchange);
                                let last = message.into_sasl_response()?;
                                let text = std::str::from_utf8(&last.data).map_err(|_| {
                                    fatal("08P01", "malformed SCRAM message: not UTF-8".into())
                                })?;
                                let server_final = started
                                    .finish(text)
                                    .map_err(|e| scram_error(self, client, &user, e))?;
                                client
                                    .feed(PgWireBackendMessage::Authentication(
                                        Authentication::SASLFinal(server_final.into_bytes().into()),
                                    ))
                                    .await?;
                                self.admit(client, &user, "scram-sha-256").await?;
                            }
                        }
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

fn scram_error(
    login: &Login,
    client: &(impl ClientInfo + ?Sized),
    user: &str,
    e: ScramError,
) -> PgWireError {
    match e {
        ScramError::Failed => login.refuse(client, user, "wrong password or unknown user"),
        other => {
            login.record(client, AuditEvent::LoginFailed, user, other.to_string());
            fatal("08P01", other.to_string())
        }
    }
}
