//! The seven platform scopes of the public documentation, in one place, and the two environments.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use utoipa::ToSchema;

/// A platform API scope. The documentation's table, verbatim; nothing implies anything else: a
/// key holds exactly the scopes it was created with.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
pub enum Scope {
    #[serde(rename = "servers:read")]
    ServersRead,
    #[serde(rename = "servers:write")]
    ServersWrite,
    #[serde(rename = "deployments:read")]
    DeploymentsRead,
    #[serde(rename = "deployments:write")]
    DeploymentsWrite,
    #[serde(rename = "logs:read")]
    LogsRead,
    #[serde(rename = "metrics:read")]
    MetricsRead,
    #[serde(rename = "billing:read")]
    BillingRead,
}

impl Scope {
    pub const ALL: [Scope; 7] = [
        Scope::ServersRead,
        Scope::ServersWrite,
        Scope::DeploymentsRead,
        Scope::DeploymentsWrite,
        Scope::LogsRead,
        Scope::MetricsRead,
        Scope::BillingRead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::ServersRead => "servers:read",
            Scope::ServersWrite => "servers:write",
            Scope::DeploymentsRead => "deployments:read",
            Scope::DeploymentsWrite => "deployments:write",
            Scope::LogsRead => "logs:read",
            Scope::MetricsRead => "metrics:read",
            Scope::BillingRead => "billing:read",
        }
    }

    /// The documentation's description of the scope.
    pub fn description(self) -> &'static str {
        match self {
            Scope::ServersRead => "List and view servers",
            Scope::ServersWrite => "Create, update, delete servers",
            Scope::DeploymentsRead => "View deployment history",
            Scope::DeploymentsWrite => "Trigger deploys and rollbacks",
            Scope::LogsRead => "Stream server logs",
            Scope::MetricsRead => "View server metrics",
            Scope::BillingRead => "View billing and usage",
        }
    }

    pub fn valid_names() -> Vec<&'static str> {
        Scope::ALL.iter().map(|s| s.as_str()).collect()
    }

    /// Parses a comma- or space-separated list such as `"deployments:write,servers:read"`,
    /// returning the scopes sorted and deduplicated, or every unknown name.
    pub fn parse_list(input: &str) -> Result<Vec<Scope>, UnknownScope> {
        Self::parse_many(
            input
                .split([',', ' '])
                .map(str::trim)
                .filter(|s| !s.is_empty()),
        )
    }

    /// Parses individual scope names, returning them sorted and deduplicated, or every unknown
    /// name.
    pub fn parse_many<'a>(
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<Vec<Scope>, UnknownScope> {
        let mut scopes = Vec::new();
        let mut unknown = Vec::new();
        for name in names {
            match name.parse::<Scope>() {
                Ok(scope) => scopes.push(scope),
                Err(_) => unknown.push(name.to_string()),
            }
        }
        if !unknown.is_empty() {
            return Err(UnknownScope { unknown });
        }
        scopes.sort();
        scopes.dedup();
        Ok(scopes)
    }

    /// Joins scopes the way they are stored and shown: `"servers:read,deployments:write"`.
    pub fn join(scopes: &[Scope]) -> String {
        scopes
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One or more names that are not scopes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope {}; valid scopes are {}", .unknown.join(", "), Scope::valid_names().join(", "))]
pub struct UnknownScope {
    pub unknown: Vec<String>,
}

impl FromStr for Scope {
    type Err = UnknownScope;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| UnknownScope {
                unknown: vec![s.to_string()],
            })
    }
}

/// Where a key or a resource lives. Production keys are `ezf_live_…`, test keys `ezf_test_…`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    ToSchema,
    Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    #[default]
    Live,
    Test,
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Live => "live",
            Environment::Test => "test",
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Environment {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "live" | "production" => Ok(Environment::Live),
            "test" => Ok(Environment::Test),
            other => Err(format!(
                "unknown environment `{other}`; expected `live` or `test`"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_docs_seven_scopes_round_trip() {
        for scope in Scope::ALL {
            assert_eq!(scope.as_str().parse::<Scope>().unwrap(), scope);
            let json = serde_json::to_string(&scope).unwrap();
            assert_eq!(json, format!("\"{}\"", scope.as_str()));
        }
        assert_eq!(
            Scope::valid_names(),
            [
                "servers:read",
                "servers:write",
                "deployments:read",
                "deployments:write",
                "logs:read",
                "metrics:read",
                "billing:read"
            ]
        );
    }

    #[test]
    fn parse_list_accepts_the_docs_example_and_reports_every_unknown_name() {
        assert_eq!(
            Scope::parse_list("deployments:write,servers:read").unwrap(),
            vec![Scope::ServersRead, Scope::DeploymentsWrite]
        );
        assert_eq!(
            Scope::parse_list("servers:read, servers:read").unwrap(),
            vec![Scope::ServersRead]
        );
        let err = Scope::parse_list("servers:read,servers:admin,root").unwrap_err();
        assert_eq!(err.unknown, vec!["servers:admin", "root"]);
        assert!(err.to_string().contains("billing:read"));
    }
}
