//! A department's policies, one folder per department under `policies/`:
//!
//! * `access.toml` — access without a token (none unless the department says so):
//!   ```toml
//!   [anonymous]
//!   read = ["https://smartdatamodels.org/dataModel.Parking/ParkingSpot"]   # expanded type IRIs, or "*"
//!   write = []
//!   attributes = ["https://smartdatamodels.org/dataModel.Parking/status"]  # optional allow-list
//!   ```
//! * `access.datalog` — the department's own biscuit datalog, evaluated with every token before the
//!   default policy (e.g. `deny if holder("partner-agency"), operation("write");`).
//!
//! Both files are optional. [`load_department`] reads one folder; [`check_tree`] checks a whole
//! `policies/` tree and reports every problem as `file:line: message` (`civitas policy check`).

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// One problem in a policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

/// Access without a token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Anonymous {
    #[serde(default)]
    pub read: Vec<String>,
    #[serde(default)]
    pub write: Vec<String>,
    pub attributes: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AccessFile {
    #[serde(default)]
    anonymous: Anonymous,
}

/// A department's access policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DepartmentPolicy {
    pub department: String,
    pub anonymous: Anonymous,
    /// The department's datalog (empty when there is no `access.datalog`).
    pub datalog: String,
}

/// Reads and validates one department's folder.
pub fn load_department(folder: &Path) -> Result<DepartmentPolicy, Vec<Finding>> {
    let department = folder
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut findings = Vec::new();
    let mut policy = DepartmentPolicy {
        department,
        ..DepartmentPolicy::default()
    };

    let access = folder.join("access.toml");
    if access.exists() {
        match std::fs::read_to_string(&access) {
            Err(e) => findings.push(Finding {
                file: access.clone(),
                line: 1,
                message: e.to_string(),
            }),
            Ok(text) => match toml::from_str::<AccessFile>(&text) {
                Err(e) => {
                    let line = e.span().map_or(1, |span| {
                        text[..span.start.min(text.len())].matches('\n').count() + 1
                    });
                    findings.push(Finding {
                        file: access.clone(),
                        line,
                        message: e.message().to_owned(),
                    });
                }
                Ok(file) => {
                    check_names(&access, &text, &file.anonymous, &mut findings);
                    policy.anonymous = file.anonymous;
                }
            },
        }
    }

    let datalog = folder.join("access.datalog");
    if datalog.exists() {
        match std::fs::read_to_string(&datalog) {
            Err(e) => findings.push(Finding {
                file: datalog.clone(),
                line: 1,
                message: e.to_string(),
            }),
            Ok(text) => {
                if let Err(errors) = civitas_auth::authorizer::check_policy(&text) {
                    findings.extend(errors.into_iter().map(|e| Finding {
                        file: datalog.clone(),
                        line: e.line,
                        message: e.message,
                    }));
                }
                policy.datalog = text;
            }
        }
    }
    if findings.is_empty() {
        Ok(policy)
    } else {
        Err(findings)
    }
}

/// Names in access.toml must be expanded IRIs (or `*`): a short name would silently match nothing.
fn check_names(file: &Path, text: &str, anonymous: &Anonymous, findings: &mut Vec<Finding>) {
    let lists = [&anonymous.read, &anonymous.write]
        .into_iter()
        .chain(anonymous.attributes.as_ref());
    for name in lists.flatten() {
        let is_iri = name
            .split_once(':')
            .is_some_and(|(scheme, rest)| !scheme.is_empty() && !rest.is_empty())
            && !name.chars().any(char::is_whitespace);
        if name != "*" && !is_iri {
            let line = text
                .find(&format!("\"{name}\""))
                .map_or(1, |at| text[..at].matches('\n').count() + 1);
            findings.push(Finding {
                file: file.to_owned(),
                line,
                message: format!("{name:?} is not an expanded IRI (write the full IRI, or \"*\")"),
            });
        }
    }
}

/// Checks every department folder of a `policies/` tree (folders without policy files are skipped;
/// `samples/` is not a department).
pub fn check_tree(root: &Path) -> Result<Vec<DepartmentPolicy>, Vec<Finding>> {
    let entries = std::fs::read_dir(root).map_err(|e| {
        vec![Finding {
            file: root.to_owned(),
            line: 1,
            message: e.to_string(),
        }]
    })?;
    let mut folders: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && p.file_name().is_some_and(|n| n != "samples"))
        .filter(|p| p.join("access.toml").exists() || p.join("access.datalog").exists())
        .collect();
    folders.sort();
    let mut policies = Vec::new();
    let mut findings = Vec::new();
    for folder in folders {
        match load_department(&folder) {
            Ok(policy) => policies.push(policy),
            Err(mut more) => findings.append(&mut more),
        }
    }
    if findings.is_empty() {
        Ok(policies)
    } else {
        Err(findings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        for (path, text) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, text).expect("write");
        }
        dir
    }

    #[test]
    fn a_valid_tree_loads() {
        let dir = tree(&[
            (
                "transport/access.toml",
                "[anonymous]\nread = [\"https://example.org/Spot\"]\nattributes = [\"https://example.org/status\"]\n",
            ),
            (
                "transport/access.datalog",
                "// partners only read\ndeny if holder(\"partner\"), operation(\"write\");\n",
            ),
            ("water/access.toml", ""),
        ]);
        let policies = check_tree(dir.path()).expect("valid");
        assert_eq!(policies.len(), 2);
        assert_eq!(policies[0].department, "transport");
        assert_eq!(policies[0].anonymous.read, ["https://example.org/Spot"]);
        assert!(
            policies[1].anonymous.read.is_empty(),
            "no anonymous access unless declared"
        );
    }

    #[test]
    fn problems_are_located() {
        let dir = tree(&[
            (
                "a/access.toml",
                "[anonymous]\nread = [\"https://example.org/Spot\"]\nreed = []\n",
            ),
            ("b/access.toml", "[anonymous]\n\nread = [\"ParkingSpot\"]\n"),
            ("c/access.datalog", "allow if true;\n\ndeny if holder(;\n"),
        ]);
        let findings = check_tree(dir.path()).expect_err("invalid");
        let lines: Vec<(String, usize)> = findings
            .iter()
            .map(|f| {
                (
                    f.file
                        .strip_prefix(dir.path())
                        .expect("inside")
                        .display()
                        .to_string(),
                    f.line,
                )
            })
            .collect();
        assert_eq!(
            lines,
            [
                ("a/access.toml".to_owned(), 3),
                ("b/access.toml".to_owned(), 3),
                ("c/access.datalog".to_owned(), 3)
            ],
            "{findings:?}"
        );
    }
}
