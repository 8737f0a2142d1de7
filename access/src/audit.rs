//! The audit trail: logins, failed logins, submissions, refusals and
//! administration.
//!
//! Each event is a structured log line (target `baocao::audit`) and a JSON
//! line appended to `<warehouse>/access/audit.jsonl`, which every server on
//! the warehouse shares and admins query as the `audit_log` table. One
//! line is one `write` to a file opened for appending, so lines of
//! concurrent servers do not interleave.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::AccessError;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditEvent {
    Login,
    LoginFailed,
    Submission,
    Denied,
    Admin,
}

impl AuditEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditEvent::Login => "login",
            AuditEvent::LoginFailed => "login_failed",
            AuditEvent::Submission => "submission",
            AuditEvent::Denied => "denied",
            AuditEvent::Admin => "admin",
        }
    }
}

/// One line of the trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// RFC 3339, UTC, microseconds.
    pub at: String,
    pub event: AuditEvent,
    pub user: String,
    /// The client's address, when the event came over the network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// The unit a submission or refusal concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Rows submitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    pub detail: String,
}

impl AuditRecord {
    pub fn new(event: AuditEvent, user: &str, detail: impl Into<String>) -> AuditRecord {
        AuditRecord {
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            event,
            user: user.to_string(),
            client: None,
            unit: None,
            rows: None,
            detail: detail.into(),
        }
    }

    pub fn client(mut self, client: impl ToString) -> AuditRecord {
        self.client = Some(client.to_string());
        self
    }

    pub fn unit(mut self, unit: impl Into<String>) -> AuditRecord {
        self.unit = Some(unit.into());
        self
    }

    pub fn rows(mut self, rows: u64) -> AuditRecord {
        self.rows = Some(rows);
        self
    }
}

/// The warehouse's audit trail.
#[derive(Debug, Clone)]
pub struct AuditLog {
    path: PathBuf,
}

impl AuditLog {
    pub fn new(root: &Path) -> AuditLog {
        AuditLog {
            path: root.join("access").join("audit.jsonl"),
        }
    }

    /// Logs `record` and appends it to the trail. A trail that cannot be
    /// written is logged as an error and does not stop the server.
    pub fn record(&self, record: AuditRecord) {
        tracing::info!(
            target: "baocao::audit",
            event = record.event.as_str(),
            user = %record.user,
            client = record.client.as_deref().unwrap_or(""),
            unit = record.unit.as_deref().unwrap_or(""),
            rows = record.rows.unwrap_or(0),
            detail = %record.detail,
        );
        if let Err(e) = self.append(&record) {
            tracing::error!("cannot write the audit trail: {e}");
        }
    }

    fn append(&self, record: &AuditRecord) -> Result<(), AccessError> {
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir).map_err(AccessError::io("create", dir))?;
        }
        let mut line = serde_json::to_vec(record).map_err(|source| AccessError::Corrupt {
            path: self.path.clone(),
            source,
        })?;
        line.push(b'\n');
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| f.write_all(&line))
            .map_err(AccessError::io("append to", &self.path))
    }

    /// Every record, oldest first. A line cut short by a crash is skipped.
    pub fn read_all(&self) -> Result<Vec<AuditRecord>, AccessError> {
        let text = match fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(AccessError::io("read", &self.path)(e)),
        };
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_appended_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::new(dir.path());
        assert!(log.read_all().unwrap().is_empty());
        log.record(
            AuditRecord::new(AuditEvent::Login, "an", "scram-sha-256").client("127.0.0.1:5"),
        );
        log.record(
            AuditRecord::new(AuditEvent::Submission, "an", "INSERT")
                .unit("00004")
                .rows(3),
        );
        let all = log.read_all().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].event, AuditEvent::Login);
        assert_eq!(all[1].unit.as_deref(), Some("00004"));
        assert_eq!(all[1].rows, Some(3));
    }
}
