//! What an account may see and submit.
//!
//! A unit-bound role sees its unit's subtree, and the subtree follows the
//! hierarchy version in force for each period (the version in force on
//! the period's last day, as for roll-ups):
//!
//! - a district of the old hierarchy sees itself and its wards for the
//!   periods of that hierarchy (up to 2025-06 for Hanoi), and nothing after
//!   it, since the district no longer exists;
//! - a ward of the new hierarchy sees itself from 2025-07, and for the
//!   earlier periods the old wards it took in, wholly or in part (its
//!   predecessors: the comparable series `rollup_current` shows for it);
//! - the city sees everything.
//!
//! A row is visible when its unit is in the subtree of the version its
//! period belongs to; a row of a table keyed on the newest hierarchy
//! (`rollup_current`) is checked against the newest version.

use std::collections::HashSet;

use baocao_catalog::Catalog;
use baocao_catalog::{HierarchyVersion, UnitCode};

use crate::accounts::{Grant, RoleKind};

/// The units an account may read, per hierarchy version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitScope {
    /// Index: the catalog's hierarchy versions, oldest first.
    per_version: Vec<HashSet<String>>,
}

impl UnitScope {
    /// `unit`'s subtree in every version, with the predecessors of the
    /// newer versions' units added to the older versions.
    pub fn of_unit(unit: &str, catalog: &Catalog) -> UnitScope {
        let hierarchies = catalog.hierarchies();
        let versions = hierarchies.versions();
        let mut per_version: Vec<HashSet<String>> =
            versions.iter().map(|v| subtree(v, unit)).collect();
        // Newest first, so that predecessors of predecessors are found.
        for i in (1..versions.len()).rev() {
            let effective = versions[i].effective;
            let taken_in: Vec<String> = hierarchies
                .changes()
                .iter()
                .filter(|c| {
                    c.effective == effective && per_version[i].contains(c.new_code.as_str())
                })
                .map(|c| c.old_code.as_str().to_string())
                .collect();
            per_version[i - 1].extend(taken_in);
        }
        UnitScope { per_version }
    }

    /// Whether a row of `unit` in hierarchy version `version` is visible.
    pub fn sees(&self, version: usize, unit: &str) -> bool {
        self.per_version
            .get(version)
            .is_some_and(|units| units.contains(unit))
    }

    /// Every unit visible in some version (for a first, coarse filter).
    pub fn all_units(&self) -> HashSet<&str> {
        self.per_version
            .iter()
            .flat_map(|v| v.iter().map(String::as_str))
            .collect()
    }

    /// Whether the scope covers every unit of every version.
    fn is_everything(&self, catalog: &Catalog) -> bool {
        catalog
            .hierarchies()
            .versions()
            .iter()
            .zip(&self.per_version)
            .all(|(v, seen)| v.len() == seen.len())
    }
}

fn subtree(version: &HierarchyVersion, unit: &str) -> HashSet<String> {
    let mut out = HashSet::new();
    let Some(root) = version.get_str(unit) else {
        return out;
    };
    let mut stack: Vec<UnitCode> = vec![root.code.clone()];
    while let Some(code) = stack.pop() {
        stack.extend(version.children(&code).iter().cloned());
        out.insert(code.as_str().to_string());
    }
    out
}

/// What an account may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Everything,
    Units(UnitScope),
    /// An account without a role: the reference tables only.
    Nothing,
}

/// One session's rights: who it is and what its role lets it do.
#[derive(Debug, Clone)]
pub struct Access {
    user: String,
    grant: Option<Grant>,
    read: Scope,
}

impl Access {
    /// The rights of `user` holding `grant`.
    pub fn new(user: &str, grant: Option<Grant>, catalog: &Catalog) -> Access {
        let read = match &grant {
            None => Scope::Nothing,
            Some(g) => match (g.role, &g.unit) {
                (RoleKind::Admin | RoleKind::Analyst | RoleKind::Etl, _) => Scope::Everything,
                (_, None) => Scope::Nothing,
                (_, Some(unit)) => {
                    let units = UnitScope::of_unit(unit, catalog);
                    if units.is_everything(catalog) {
                        Scope::Everything
                    } else {
                        Scope::Units(units)
                    }
                }
            },
        };
        Access {
            user: user.to_string(),
            grant,
            read,
        }
    }

    /// A server without accounts (loopback only): every client is an
    /// administrator, as with PostgreSQL's `trust`.
    pub fn trusted(user: &str) -> Access {
        Access {
            user: user.to_string(),
            grant: Some(Grant {
                role: RoleKind::Admin,
                unit: None,
            }),
            read: Scope::Everything,
        }
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn grant(&self) -> Option<&Grant> {
        self.grant.as_ref()
    }

    pub fn is_admin(&self) -> bool {
        matches!(&self.grant, Some(g) if g.role == RoleKind::Admin)
    }

    pub fn read_scope(&self) -> &Scope {
        &self.read
    }

    /// Whether this account may submit reports for `unit`.
    pub fn may_submit(&self, unit: &str) -> bool {
        match &self.grant {
            Some(g) => match g.role {
                RoleKind::Admin | RoleKind::Etl => true,
                RoleKind::Reporter => g.unit.as_deref() == Some(unit),
                RoleKind::Analyst | RoleKind::Viewer => false,
            },
            None => false,
        }
    }

    /// Whether this account may submit at all (for a unit of its own).
    pub fn may_submit_any(&self) -> bool {
        matches!(&self.grant, Some(g) if matches!(g.role, RoleKind::Admin | RoleKind::Etl | RoleKind::Reporter))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hanoi() -> Catalog {
        let dir = tempfile::tempdir().unwrap();
        baocao_catalog::write_default_files(dir.path()).unwrap();
        baocao_catalog::load_dir(dir.path()).unwrap()
    }

    #[test]
    fn scopes_follow_the_hierarchy_in_force_across_the_reform() {
        let catalog = hanoi();
        let (old, new) = (0, 1);
        // Ba Đình district (001) before the reform: itself and its wards;
        // after it, nothing (the district is gone).
        let district = UnitScope::of_unit("001", &catalog);
        assert!(district.sees(old, "001"));
        assert!(district.sees(old, "00004"));
        assert!(district.sees(old, "00016"));
        assert!(!district.sees(old, "002"));
        assert!(!district.sees(new, "00004"));
        // New ward 00004 (Ba Đình) from 2025-07: itself; before it, the old
        // wards it took in — 00004 wholly, 00016 and 00019 in part.
        let ward = UnitScope::of_unit("00004", &catalog);
        assert!(ward.sees(new, "00004"));
        assert!(!ward.sees(new, "00097"));
        assert!(ward.sees(old, "00004"));
        assert!(ward.sees(old, "00016"));
        assert!(ward.sees(old, "00019"));
        assert!(!ward.sees(old, "00001"));
        assert!(!ward.sees(old, "001"));
        // The city sees everything; a viewer of it needs no filter.
        let city = Access::new(
            "city",
            Some(Grant {
                role: RoleKind::Viewer,
                unit: Some("01".into()),
            }),
            &catalog,
        );
        assert_eq!(city.read_scope(), &Scope::Everything);
        let reporter = Access::new(
            "w",
            Some(Grant {
                role: RoleKind::Reporter,
                unit: Some("00004".into()),
            }),
            &catalog,
        );
        assert!(reporter.may_submit("00004"));
        assert!(!reporter.may_submit("00097"));
        assert!(!Access::new("v", None, &catalog).may_submit_any());
        assert_eq!(
            Access::new("v", None, &catalog).read_scope(),
            &Scope::Nothing
        );
    }
}
