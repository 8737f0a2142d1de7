//! `baocao user`: the operator's side of the accounts (the SQL side is
//! `postgres::privileges`), and the accounts a server or the demo creates
//! at start.

use std::io::BufRead;

use anyhow::{Context, Result};
use baocao_access::{AccountStore, AuditEvent, AuditLog, AuditRecord, Grant, RoleKind};

use crate::cli::{UserAction, UserArgs};
use crate::warehouse::Warehouse;

/// The password of a `user add`/`passwd`: `BAOCAO_PASSWORD`, or else the
/// first line of standard input (so that it stays out of the shell's
/// history and the process list).
fn password() -> Result<String> {
    if let Ok(p) = std::env::var("BAOCAO_PASSWORD") {
        return Ok(p);
    }
    eprintln!("password (one line on standard input):");
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

pub fn run(args: &UserArgs) -> Result<()> {
    let w = Warehouse::open(&args.warehouse)?;
    let catalog = w.load_catalog()?;
    let store = AccountStore::new(w.root());
    let audit = AuditLog::new(w.root());
    let who = format!(
        "baocao user ({})",
        std::env::var("USER").unwrap_or_else(|_| "operator".into())
    );
    let grant_of = |role: &str, unit: Option<&str>| -> Result<Grant> {
        Ok(Grant::new(RoleKind::parse(role)?, unit, &catalog)?)
    };
    let done = match &args.action {
        UserAction::Add {
            name,
            admin,
            role,
            unit,
        } => {
            let grant = match (admin, role) {
                (true, _) => Some(grant_of("admin", None)?),
                (false, Some(role)) => Some(grant_of(role, unit.as_deref())?),
                (false, None) => None,
            };
            let password = password()?;
            store.update(|a| a.add(name, &password, grant.clone()))?;
            format!(
                "created role {name} ({})",
                grant
                    .map(|g| g.to_string())
                    .unwrap_or_else(|| "no role yet".into())
            )
        }
        UserAction::Remove { name } => {
            store.update(|a| a.remove(name))?;
            format!("removed role {name}")
        }
        UserAction::Passwd { name } => {
            let password = password()?;
            store.update(|a| a.set_password(name, &password))?;
            format!("changed the password of {name}")
        }
        UserAction::Grant { name, role, unit } => {
            let grant = grant_of(role, unit.as_deref())?;
            store.update(|a| a.grant(name, Some(grant.clone())))?;
            format!("granted {grant} to {name}")
        }
        UserAction::Revoke { name } => {
            store.update(|a| a.grant(name, None))?;
            format!("revoked the role of {name}")
        }
        UserAction::List => {
            let accounts = store.load()?;
            println!("{:<24} {:<28} changed", "name", "role");
            for a in accounts.list() {
                let role = a
                    .grant
                    .as_ref()
                    .map(|g| g.to_string())
                    .unwrap_or_else(|| "-".into());
                println!("{:<24} {:<28} {}", a.name, role, a.changed);
            }
            return Ok(());
        }
    };
    audit.record(AuditRecord::new(AuditEvent::Admin, &who, done.clone()));
    println!("{done}");
    Ok(())
}

/// The first admin, from `BAOCAO_ADMIN_PASSWORD` (and `BAOCAO_ADMIN_USER`,
/// default `admin`), when the warehouse has no accounts yet.
pub fn first_admin_from_env(w: &Warehouse) -> Result<()> {
    let Ok(password) = std::env::var("BAOCAO_ADMIN_PASSWORD") else {
        return Ok(());
    };
    let name = std::env::var("BAOCAO_ADMIN_USER").unwrap_or_else(|_| "admin".into());
    let store = AccountStore::new(w.root());
    let created = store.update(|a| {
        if !a.is_empty() {
            return Ok(false);
        }
        a.add(
            &name,
            &password,
            Some(Grant {
                role: RoleKind::Admin,
                unit: None,
            }),
        )?;
        Ok(true)
    })?;
    if created {
        AuditLog::new(w.root()).record(AuditRecord::new(
            AuditEvent::Admin,
            "BAOCAO_ADMIN_PASSWORD",
            format!("created the first admin {name}"),
        ));
        tracing::info!(admin = %name, "created the first admin from BAOCAO_ADMIN_PASSWORD");
    }
    Ok(())
}

/// The demo's accounts: (name, password = name, role, unit).
pub const DEMO_ACCOUNTS: &[(&str, &str, Option<&str>)] = &[
    ("admin", "admin", None),
    ("analyst", "analyst", None),
    ("etl", "etl", None),
    // Ba Đình district (before the reform) and its ward Phúc Xá.
    ("badinh", "viewer", Some("001")),
    ("phucxa", "reporter", Some("00001")),
    // Ba Đình ward of the new hierarchy (from 2025-07).
    ("badinh_ward", "reporter", Some("00004")),
];

/// Creates the demo accounts that do not exist yet.
pub fn demo_accounts(w: &Warehouse) -> Result<()> {
    let catalog = w.load_catalog()?;
    let store = AccountStore::new(w.root());
    store.update(|a| {
        for (name, role, unit) in DEMO_ACCOUNTS {
            if a.get(name).is_some() {
                continue;
            }
            let grant = Grant::new(RoleKind::parse(role)?, *unit, &catalog)?;
            a.add(name, name, Some(grant))?;
        }
        Ok(())
    })?;
    Ok(())
}
