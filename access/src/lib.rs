//! Access to the warehouse: who may connect, and what each account may
//! read and submit.
//!
//! - [`scram`]: passwords kept only as SCRAM-SHA-256 verifiers, and the
//!   server's side of the exchange.
//! - [`accounts`]: the accounts and their roles, in one file of the
//!   warehouse (`access/accounts.json`) that every server and the `baocao
//!   user` command share; changed atomically under a lock.
//! - [`scope`]: what a role may see — every unit, or a unit's subtree in
//!   each hierarchy version — and which units it may submit for.
//! - [`audit`]: logins, refusals, submissions and administration, as
//!   structured log lines and as a file admins query as a table.
//!
//! Enforcement is the server's (it rewrites scans and checks writes); this
//! crate decides, it does not enforce.

pub mod accounts;
pub mod audit;
pub mod scope;
pub mod scram;

pub use accounts::{Account, AccountStore, Accounts, Grant, RoleKind, Stamp};
pub use audit::{AuditEvent, AuditLog, AuditRecord};
pub use scope::{Access, Scope, UnitScope};
pub use scram::{Exchange, ScramError, Verifier};

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("the system's random number generator failed")]
    Random,
    #[error("a password must not be empty")]
    EmptyPassword,
    #[error(
        "not a SCRAM-SHA-256 verifier (expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>)"
    )]
    BadVerifier,
    #[error("role \"{0}\" already exists")]
    Exists(String),
    #[error("role \"{0}\" does not exist")]
    Unknown(String),
    #[error("role \"{0}\" is the last admin; grant admin to another role first")]
    LastAdmin(String),
    #[error("role \"{name}\" does not hold {asked}; it holds {held}")]
    NotHeld {
        name: String,
        asked: String,
        held: String,
    },
    #[error("invalid role name {0:?}: use 1 to 63 letters, digits, '_', '-', '.' or '@'")]
    BadName(String),
    #[error("unknown role kind {0:?}: use admin, analyst, etl, reporter or viewer")]
    BadKind(String),
    #[error("role {kind} is bound to a unit: say which (e.g. {kind} for unit 001)")]
    UnitNeeded { kind: &'static str },
    #[error("role {kind} is not bound to a unit; it covers every unit")]
    UnitNotAllowed { kind: &'static str },
    #[error("unit {0} is in no hierarchy version of the catalog")]
    UnknownUnit(String),
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid accounts file: {source}")]
    Corrupt {
        path: std::path::PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl AccessError {
    fn io(
        action: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> AccessError {
        let path = path.to_path_buf();
        move |source| AccessError::Io {
            action,
            path,
            source,
        }
    }
}
