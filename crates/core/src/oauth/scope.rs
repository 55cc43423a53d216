//! The four MCP scopes of the documentation.

pub const MCP_READ: &str = "mcp:read";
pub const MCP_WRITE: &str = "mcp:write";
pub const MCP_EXECUTE: &str = "mcp:execute";
pub const OFFLINE_ACCESS: &str = "offline_access";

/// In the documentation's order.
pub const ALL: [&str; 4] = [MCP_READ, MCP_WRITE, MCP_EXECUTE, OFFLINE_ACCESS];

/// Plain words for the consent page.
pub fn describe(scope: &str) -> &'static str {
    match scope {
        MCP_READ => "See the list of available tools",
        MCP_WRITE => "Call tools that modify state",
        MCP_EXECUTE => "Execute arbitrary tool calls",
        OFFLINE_ACCESS => {
            "Stay connected when you are not using it (refresh tokens, up to 30 days)"
        }
        _ => "Unknown permission",
    }
}

/// Parses a space-separated scope string into known scopes, deduplicated, in canonical order.
/// `Err` lists the unknown ones.
pub fn parse(input: &str) -> Result<Vec<&'static str>, Vec<String>> {
    let mut unknown = Vec::new();
    let mut found = [false; 4];
    for s in input.split(' ').filter(|s| !s.is_empty()) {
        match ALL.iter().position(|k| *k == s) {
            Some(i) => found[i] = true,
            None => unknown.push(s.to_string()),
        }
    }
    if !unknown.is_empty() {
        return Err(unknown);
    }
    Ok(ALL
        .iter()
        .zip(found)
        .filter(|(_, f)| *f)
        .map(|(s, _)| *s)
        .collect())
}

pub fn join(scopes: &[&str]) -> String {
    scopes.join(" ")
}

/// Whether every scope of `wanted` is in `granted` (both space-separated).
pub fn is_subset(wanted: &str, granted: &str) -> bool {
    let granted: Vec<&str> = granted.split(' ').collect();
    wanted
        .split(' ')
        .filter(|s| !s.is_empty())
        .all(|s| granted.contains(&s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing_orders_and_rejects() {
        assert_eq!(
            parse("offline_access mcp:read mcp:read").unwrap(),
            vec![MCP_READ, OFFLINE_ACCESS]
        );
        assert_eq!(
            parse("mcp:admin openid").unwrap_err(),
            vec!["mcp:admin", "openid"]
        );
        assert!(parse("").unwrap().is_empty());
        assert!(is_subset("mcp:read", "mcp:read mcp:write"));
        assert!(!is_subset("mcp:execute", "mcp:read mcp:write"));
    }
}
