//! Interop tests with third-party MCP clients and servers; see tests/.
