//! The results of the checks, in groups, and their two renderings: lines for a person (✔, ‼,
//! ✖ and a hint for each failure) and one JSON document for scripts.

use serde::Serialize;

/// `--output json`'s `schemaVersion`: raised only when a field changes meaning or goes away.
pub const SCHEMA_VERSION: u32 = 1;

/// Exit codes (documented in the README).
pub const EXIT_OK: u8 = 0;
/// At least one check failed.
pub const EXIT_FAILED: u8 = 1;
/// No check could run: the kubeconfig could not be read or the API server not reached.
pub const EXIT_UNREACHABLE: u8 = 2;

/// How one check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    Success,
    /// Worth a look, but the install works (exit code 0).
    Warning,
    Failure,
}

/// One line of `tollgate check`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    /// What is checked, phrased as what should hold.
    pub description: String,
    pub result: Outcome,
    /// What was found, when it is worth saying (always for a warning or failure). One line per
    /// object at fault.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
    /// What to do about a warning or failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl CheckResult {
    pub fn success(description: impl Into<String>) -> Self {
        Self {
            description: description.into(),
            result: Outcome::Success,
            details: Vec::new(),
            hint: None,
        }
    }

    pub fn failure(
        description: impl Into<String>,
        details: Vec<String>,
        hint: impl Into<String>,
    ) -> Self {
        Self {
            description: description.into(),
            result: Outcome::Failure,
            details,
            hint: Some(hint.into()),
        }
    }

    pub fn warning(
        description: impl Into<String>,
        details: Vec<String>,
        hint: impl Into<String>,
    ) -> Self {
        Self {
            result: Outcome::Warning,
            ..Self::failure(description, details, hint)
        }
    }

    /// The same result with `detail` shown under it.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.details.push(detail.into());
        self
    }
}

/// The checks of one part of the install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    pub name: &'static str,
    pub checks: Vec<CheckResult>,
}

/// Every group, in the order they ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub schema_version: u32,
    pub success: bool,
    pub exit_code: u8,
    pub groups: Vec<Group>,
}

impl Report {
    /// A report of `groups`; `reached` is false when the API server could not be asked.
    pub fn new(groups: Vec<Group>, reached: bool) -> Self {
        let failed = groups
            .iter()
            .flat_map(|g| &g.checks)
            .any(|c| c.result == Outcome::Failure);
        let exit_code = match (reached, failed) {
            (false, _) => EXIT_UNREACHABLE,
            (true, true) => EXIT_FAILED,
            (true, false) => EXIT_OK,
        };
        Self {
            schema_version: SCHEMA_VERSION,
            success: exit_code == EXIT_OK,
            exit_code,
            groups,
        }
    }

    /// The lines a person reads.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for group in &self.groups {
            out.push_str(group.name);
            out.push('\n');
            out.push_str(&"-".repeat(group.name.chars().count()));
            out.push('\n');
            for check in &group.checks {
                let mark = match check.result {
                    Outcome::Success => '✔',
                    Outcome::Warning => '‼',
                    Outcome::Failure => '✖',
                };
                out.push_str(&format!("{mark} {}\n", printable(&check.description)));
                for detail in &check.details {
                    out.push_str(&format!("    {}\n", printable(detail)));
                }
                if let Some(hint) = &check.hint {
                    out.push_str(&format!("    hint: {}\n", printable(hint)));
                }
            }
            out.push('\n');
        }
        let count = |outcome| {
            self.groups
                .iter()
                .flat_map(|g| &g.checks)
                .filter(|c| c.result == outcome)
                .count()
        };
        let (failed, warned) = (count(Outcome::Failure), count(Outcome::Warning));
        if self.success {
            out.push_str(&format!("Status check results are ✔ ({warned} warnings)\n"));
        } else {
            out.push_str(&format!(
                "Status check results are ✖ ({failed} failed, {warned} warnings)\n"
            ));
        }
        out
    }

    /// The JSON document scripts read (`--output json`).
    pub fn json(&self) -> String {
        // A tree of strings, numbers and booleans always serializes.
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }
}

/// `text` with control characters escaped. Condition messages are written by whoever may
/// patch a resource's status, and must not move the cursor or clear the screen of the
/// operator reading them, nor fake a ✔ line below.
fn printable(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}
