//! Accounts and their roles, kept in `<warehouse>/access/accounts.json`.
//!
//! Every server on the warehouse and the `baocao user` command read the
//! same file, so an account made anywhere logs in everywhere, and survives
//! restarts. A change takes the file's lock (`accounts.lock`), reads the
//! file, writes the new content to a temporary file, flushes it to disk and
//! renames it over the old one: a reader sees the old accounts or the new
//! ones, never half of a change, and a crash leaves one of the two.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use baocao_catalog::Catalog;
use serde::{Deserialize, Serialize};

use crate::AccessError;
use crate::scram::Verifier;

/// The five roles. `reporter` and `viewer` are bound to a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoleKind {
    /// Everything: reads, submissions, accounts, server-side SQL.
    Admin,
    /// Reads every unit's data.
    Analyst,
    /// Submits for any unit, and reads every unit's data to check its loads.
    Etl,
    /// Submits for its unit only; reads its unit's subtree.
    Reporter,
    /// Reads its unit's subtree.
    Viewer,
}

impl RoleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RoleKind::Admin => "admin",
            RoleKind::Analyst => "analyst",
            RoleKind::Etl => "etl",
            RoleKind::Reporter => "reporter",
            RoleKind::Viewer => "viewer",
        }
    }

    pub fn parse(s: &str) -> Result<RoleKind, AccessError> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "admin" => RoleKind::Admin,
            "analyst" => RoleKind::Analyst,
            "etl" => RoleKind::Etl,
            "reporter" => RoleKind::Reporter,
            "viewer" => RoleKind::Viewer,
            _ => return Err(AccessError::BadKind(s.to_string())),
        })
    }

    pub fn is_unit_bound(self) -> bool {
        matches!(self, RoleKind::Reporter | RoleKind::Viewer)
    }
}

/// An account's role, with its unit when the role is bound to one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub role: RoleKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

impl Grant {
    /// A grant checked against the catalog: unit-bound roles name a unit
    /// of some hierarchy version, the others name none.
    pub fn new(
        role: RoleKind,
        unit: Option<&str>,
        catalog: &Catalog,
    ) -> Result<Grant, AccessError> {
        match (role.is_unit_bound(), unit) {
            (true, None) => Err(AccessError::UnitNeeded {
                kind: role.as_str(),
            }),
            (false, Some(_)) => Err(AccessError::UnitNotAllowed {
                kind: role.as_str(),
            }),
            (false, None) => Ok(Grant { role, unit: None }),
            (true, Some(code)) => {
                let known = catalog
                    .hierarchies()
                    .versions()
                    .iter()
                    .any(|v| v.get_str(code).is_some());
                if known {
                    Ok(Grant {
                        role,
                        unit: Some(code.to_string()),
                    })
                } else {
                    Err(AccessError::UnknownUnit(code.to_string()))
                }
            }
        }
    }
}

impl std::fmt::Display for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.unit {
            Some(unit) => write!(f, "{} of unit {unit}", self.role.as_str()),
            None => f.write_str(self.role.as_str()),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Account {
    pub name: String,
    /// The SCRAM-SHA-256 verifier, never the password.
    pub password: String,
    /// `None`: the account may log in and read the reference tables only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<Grant>,
    pub created: String,
    pub changed: String,
}

impl Account {
    pub fn verifier(&self) -> Result<Verifier, AccessError> {
        self.password.parse()
    }
}

/// The accounts of a warehouse.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Accounts {
    accounts: Vec<Account>,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// PostgreSQL allows any name up to 63 bytes when quoted; these are the
/// names that need no quoting in a connection string or a log line.
fn check_name(name: &str) -> Result<(), AccessError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '@'));
    if ok {
        Ok(())
    } else {
        Err(AccessError::BadName(name.to_string()))
    }
}

impl Accounts {
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
    }

    pub fn list(&self) -> &[Account] {
        &self.accounts
    }

    pub fn get(&self, name: &str) -> Option<&Account> {
        self.accounts.iter().find(|a| a.name == name)
    }

    fn get_mut(&mut self, name: &str) -> Result<&mut Account, AccessError> {
        self.accounts
            .iter_mut()
            .find(|a| a.name == name)
            .ok_or_else(|| AccessError::Unknown(name.to_string()))
    }

    pub fn add(
        &mut self,
        name: &str,
        password: &str,
        grant: Option<Grant>,
    ) -> Result<(), AccessError> {
        check_name(name)?;
        if self.get(name).is_some() {
            return Err(AccessError::Exists(name.to_string()));
        }
        let at = now();
        self.accounts.push(Account {
            name: name.to_string(),
            password: Verifier::new(password)?.to_string(),
            grant,
            created: at.clone(),
            changed: at,
        });
        Ok(())
    }

    pub fn remove(&mut self, name: &str) -> Result<(), AccessError> {
        if self.is_last_admin(name) {
            return Err(AccessError::LastAdmin(name.to_string()));
        }
        let before = self.accounts.len();
        self.accounts.retain(|a| a.name != name);
        if self.accounts.len() == before {
            return Err(AccessError::Unknown(name.to_string()));
        }
        Ok(())
    }

    pub fn set_password(&mut self, name: &str, password: &str) -> Result<(), AccessError> {
        let verifier = Verifier::new(password)?.to_string();
        let account = self.get_mut(name)?;
        account.password = verifier;
        account.changed = now();
        Ok(())
    }

    /// Gives `name` its role (replacing the one it had: an account has one).
    pub fn grant(&mut self, name: &str, grant: Option<Grant>) -> Result<(), AccessError> {
        let stays_admin = matches!(&grant, Some(g) if g.role == RoleKind::Admin);
        if !stays_admin && self.is_last_admin(name) {
            return Err(AccessError::LastAdmin(name.to_string()));
        }
        let account = self.get_mut(name)?;
        account.grant = grant;
        account.changed = now();
        Ok(())
    }

    /// Takes `grant` away from `name`, which must hold exactly it.
    pub fn revoke(&mut self, name: &str, grant: &Grant) -> Result<(), AccessError> {
        let held = self
            .get(name)
            .ok_or_else(|| AccessError::Unknown(name.to_string()))?
            .grant
            .clone();
        if held.as_ref() != Some(grant) {
            return Err(AccessError::NotHeld {
                name: name.to_string(),
                asked: grant.to_string(),
                held: held
                    .map(|g| g.to_string())
                    .unwrap_or_else(|| "no role".into()),
            });
        }
        self.grant(name, None)
    }

    /// Whether `name` is the only admin (a warehouse with accounts keeps
    /// one, or nobody could manage them).
    fn is_last_admin(&self, name: &str) -> bool {
        let is_admin = matches!(self.get(name).and_then(|a| a.grant.as_ref()), Some(g) if g.role == RoleKind::Admin);
        is_admin && self.admins() == 1
    }

    pub fn admins(&self) -> usize {
        self.accounts
            .iter()
            .filter(|a| matches!(&a.grant, Some(g) if g.role == RoleKind::Admin))
            .count()
    }
}

/// See [`AccountStore::stamp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    inode: u64,
    modified: (i64, i64),
}

/// Where a warehouse keeps its accounts.
#[derive(Debug, Clone)]
pub struct AccountStore {
    dir: PathBuf,
}

impl AccountStore {
    /// The accounts of the warehouse at `root` (the file may not exist yet:
    /// a warehouse without accounts has none).
    pub fn new(root: &Path) -> AccountStore {
        AccountStore {
            dir: root.join("access"),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file(&self) -> PathBuf {
        self.dir.join("accounts.json")
    }

    /// What identifies the accounts file's content: every update writes a
    /// new file and renames it over the old one, so the stamp changes with
    /// each (`None`: no file yet).
    pub fn stamp(&self) -> Option<Stamp> {
        use std::os::unix::fs::MetadataExt;
        let m = fs::metadata(self.file()).ok()?;
        Some(Stamp {
            inode: m.ino(),
            modified: (m.mtime(), m.mtime_nsec()),
        })
    }

    /// The accounts as they are now.
    pub fn load(&self) -> Result<Accounts, AccessError> {
        let path = self.file();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|source| AccessError::Corrupt { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Accounts::default()),
            Err(e) => Err(AccessError::io("read", &path)(e)),
        }
    }

    /// Applies `change` to the accounts atomically, under the warehouse's
    /// accounts lock; nothing is written when `change` fails.
    pub fn update<T>(
        &self,
        change: impl FnOnce(&mut Accounts) -> Result<T, AccessError>,
    ) -> Result<T, AccessError> {
        fs::create_dir_all(&self.dir).map_err(AccessError::io("create", &self.dir))?;
        let lock_path = self.dir.join("accounts.lock");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(AccessError::io("open", &lock_path))?;
        lock.lock().map_err(AccessError::io("lock", &lock_path))?;
        let mut accounts = self.load()?;
        let result = change(&mut accounts)?;
        let path = self.file();
        let temporary = self
            .dir
            .join(format!("accounts.json.{}.tmp", std::process::id()));
        let bytes =
            serde_json::to_vec_pretty(&accounts).map_err(|source| AccessError::Corrupt {
                path: path.clone(),
                source,
            })?;
        let mut file = fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&temporary)
            .map_err(AccessError::io("write", &temporary))?;
        file.write_all(&bytes)
            .and_then(|()| file.sync_all())
            .map_err(AccessError::io("write", &temporary))?;
        fs::rename(&temporary, &path).map_err(AccessError::io("replace", &path))?;
        fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(AccessError::io("flush", &self.dir))?;
        drop(lock);
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_survive_a_reload_and_keep_only_verifiers() {
        let dir = tempfile::tempdir().unwrap();
        let store = AccountStore::new(dir.path());
        assert!(store.load().unwrap().is_empty());
        store
            .update(|a| {
                a.add(
                    "ward_admin",
                    "s3cret",
                    Some(Grant {
                        role: RoleKind::Admin,
                        unit: None,
                    }),
                )
            })
            .unwrap();
        store.update(|a| a.add("nobody", "pw", None)).unwrap();
        assert!(matches!(
            store.update(|a| a.add("nobody", "pw", None)),
            Err(AccessError::Exists(_))
        ));
        let text = fs::read_to_string(dir.path().join("access/accounts.json")).unwrap();
        assert!(!text.contains("s3cret"));
        let loaded = AccountStore::new(dir.path()).load().unwrap();
        assert_eq!(loaded.list().len(), 2);
        assert_eq!(loaded.admins(), 1);
        assert!(
            loaded
                .get("ward_admin")
                .unwrap()
                .verifier()
                .unwrap()
                .matches("s3cret")
        );
        store.update(|a| a.set_password("nobody", "new")).unwrap();
        assert!(
            store
                .load()
                .unwrap()
                .get("nobody")
                .unwrap()
                .verifier()
                .unwrap()
                .matches("new")
        );
        store.update(|a| a.remove("nobody")).unwrap();
        assert!(store.load().unwrap().get("nobody").is_none());
        assert!(matches!(
            store.update(|a| a.remove("nobody")),
            Err(AccessError::Unknown(_))
        ));
        assert!(matches!(
            store.update(|a| a.add("x y", "pw", None)),
            Err(AccessError::BadName(_))
        ));
    }
}
