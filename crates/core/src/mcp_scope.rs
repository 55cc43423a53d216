//! Which MCP scope each JSON-RPC message needs, per the table in `docs/gateway-scopes.md`.
//! The scopes form a ladder: `mcp:execute` ⊇ `mcp:write` ⊇ `mcp:read`.

use crate::oauth::scope::{MCP_EXECUTE, MCP_READ, MCP_WRITE};
use ezforge_proto::ToolPolicy;
use serde_json::Value;

/// The verdict on one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Needs {
    /// Allowed with this scope (or one above it on the ladder).
    Scope(&'static str),
    /// Refused whatever the scopes: the server's tool policy denies the tool.
    Denied(String),
}

fn rank(scope: &str) -> u8 {
    match scope {
        MCP_READ => 1,
        MCP_WRITE => 2,
        MCP_EXECUTE => 3,
        _ => 0,
    }
}

/// Whether the granted scopes (space-separated) reach `needed` on the ladder.
pub fn satisfies(granted: &str, needed: &str) -> bool {
    let best = granted.split(' ').map(rank).max().unwrap_or(0);
    best >= rank(needed)
}

/// Whether `tool` may be called at all under `policy`.
pub fn tool_allowed(policy: &ToolPolicy, tool: &str) -> bool {
    !policy.deny.iter().any(|t| t == tool)
        && (policy.allow.is_empty() || policy.allow.iter().any(|t| t == tool))
}

/// The scope one JSON-RPC message needs.
pub fn needs(message: &Value, policy: &ToolPolicy) -> Needs {
    let Some(method) = message.get("method").and_then(Value::as_str) else {
        // A response to a request of the server (sampling, elicitation, roots): part of a
        // conversation the client is already in.
        return Needs::Scope(MCP_READ);
    };
    match method {
        "initialize"
        | "server/discover"
        | "ping"
        | "resources/read"
        | "prompts/get"
        | "completion/complete"
        | "resources/subscribe"
        | "resources/unsubscribe"
        | "logging/setLevel" => Needs::Scope(MCP_READ),
        m if m.starts_with("notifications/") => Needs::Scope(MCP_READ),
        m if m.ends_with("/list") => Needs::Scope(MCP_READ),
        "tools/call" => {
            // `get` twice rather than `pointer`, which allocates as it unescapes each step.
            let tool = message
                .get("params")
                .and_then(|p| p.get("name"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            if !tool_allowed(policy, tool) {
                return Needs::Denied(format!("the tool `{tool}` is not allowed on this server"));
            }
            if policy.execute.iter().any(|t| t == tool) {
                Needs::Scope(MCP_EXECUTE)
            } else {
                Needs::Scope(MCP_WRITE)
            }
        }
        // Anything the table does not know is treated as the most powerful kind of call.
        _ => Needs::Scope(MCP_EXECUTE),
    }
}

/// Keeps, in a `tools/list` result, only the tools the token may call: allowed by the policy
/// and reachable with its scopes.
pub fn filter_tools_list(result: &mut Value, policy: &ToolPolicy, granted: &str) {
    if let Some(tools) = result.get_mut("tools").and_then(Value::as_array_mut) {
        tools.retain(|tool| {
            let name = tool.get("name").and_then(Value::as_str).unwrap_or_default();
            let call = serde_json::json!({"method": "tools/call", "params": {"name": name}});
            matches!(needs(&call, policy), Needs::Scope(s) if satisfies(granted, s))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn call(method: &str) -> Value {
        json!({"jsonrpc": "2.0", "id": 1, "method": method})
    }

    /// Every row of docs/gateway-scopes.md.
    #[test]
    fn the_table() {
        let p = ToolPolicy::default();
        for m in [
            "initialize",
            "server/discover",
            "ping",
            "notifications/initialized",
            "notifications/cancelled",
            "tools/list",
            "resources/list",
            "resources/templates/list",
            "prompts/list",
            "resources/read",
            "prompts/get",
            "completion/complete",
            "resources/subscribe",
            "resources/unsubscribe",
            "logging/setLevel",
        ] {
            assert_eq!(needs(&call(m), &p), Needs::Scope(MCP_READ), "{m}");
        }
        assert_eq!(
            needs(&json!({"jsonrpc": "2.0", "id": 7, "result": {}}), &p),
            Needs::Scope(MCP_READ)
        );
        assert_eq!(
            needs(
                &json!({"method": "tools/call", "params": {"name": "echo"}}),
                &p
            ),
            Needs::Scope(MCP_WRITE)
        );
        assert_eq!(
            needs(&call("sampling/unknown"), &p),
            Needs::Scope(MCP_EXECUTE)
        );
        let p = ToolPolicy {
            allow: vec![],
            deny: vec!["rm".into()],
            execute: vec!["shell".into()],
        };
        assert_eq!(
            needs(
                &json!({"method": "tools/call", "params": {"name": "shell"}}),
                &p
            ),
            Needs::Scope(MCP_EXECUTE)
        );
        assert!(matches!(
            needs(
                &json!({"method": "tools/call", "params": {"name": "rm"}}),
                &p
            ),
            Needs::Denied(_)
        ));
        let p = ToolPolicy {
            allow: vec!["echo".into()],
            deny: vec![],
            execute: vec![],
        };
        assert!(matches!(
            needs(
                &json!({"method": "tools/call", "params": {"name": "add"}}),
                &p
            ),
            Needs::Denied(_)
        ));
        assert_eq!(
            needs(
                &json!({"method": "tools/call", "params": {"name": "echo"}}),
                &p
            ),
            Needs::Scope(MCP_WRITE)
        );
    }

    #[test]
    fn tools_list_shows_what_the_token_may_call() {
        let p = ToolPolicy {
            allow: vec![],
            deny: vec!["rm".into()],
            execute: vec!["shell".into()],
        };
        let list = json!({"tools": [{"name": "echo"}, {"name": "rm"}, {"name": "shell"}]});
        let names = |granted: &str| {
            let mut r = list.clone();
            filter_tools_list(&mut r, &p, granted);
            r["tools"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["name"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(names("mcp:execute"), ["echo", "shell"]);
        assert_eq!(names("mcp:write"), ["echo"]);
        assert!(names("mcp:read").is_empty());
    }

    #[test]
    fn the_ladder() {
        assert!(satisfies("mcp:execute", MCP_READ));
        assert!(satisfies("mcp:write offline_access", MCP_WRITE));
        assert!(!satisfies("mcp:read offline_access", MCP_WRITE));
        assert!(!satisfies("mcp:write", MCP_EXECUTE));
        assert!(!satisfies("offline_access", MCP_READ));
    }
}
