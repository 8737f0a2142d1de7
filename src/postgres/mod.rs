//! What PostgreSQL clients expect of a server beyond what DataFusion and
//! datafusion-postgres give: session settings (`SET`/`SHOW`/`RESET`,
//! `DISCARD`, `DEALLOCATE`, `current_setting`), PostgreSQL's result column
//! names, `version()` that reads like PostgreSQL's, and the parameter types
//! drivers bind by; and who may connect and do what (`login`,
//! `privileges`).

pub mod cancel;
pub mod complexity;
mod functions;
pub mod information_schema;
pub mod login;
pub mod pg_catalog;
pub mod privileges;
mod rewrite;
mod select;
mod session;
mod settings;
mod watchdog;

pub use functions::{register, register_to_regclass};
pub use privileges::access_of;
pub use select::SelectHook;
pub use session::{STATEMENT_TIMEOUT_MS, Session};
pub use settings::SettingsHook;
