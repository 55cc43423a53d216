//! The CLI's saved session: `$XDG_CONFIG_HOME/ezforge/session.json` (or `EZFORGE_CONFIG_DIR`),
//! written with mode 0600 in a 0700 directory.

use crate::error::{CliError, CliResult};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Serialize, Deserialize)]
pub struct SavedSession {
    pub api_url: String,
    pub email: String,
    pub user_id: String,
    pub token: String,
    pub csrf_token: String,
    /// Unix seconds.
    pub expires_at: i64,
}

impl std::fmt::Debug for SavedSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SavedSession")
            .field("api_url", &self.api_url)
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

pub fn config_dir() -> CliResult<PathBuf> {
    if let Some(dir) = std::env::var_os("EZFORGE_CONFIG_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    dirs::config_dir()
        .map(|d| d.join("ezforge"))
        .ok_or_else(|| {
            CliError::Failure(
                "cannot find a configuration directory; set EZFORGE_CONFIG_DIR".into(),
            )
        })
}

pub fn session_path() -> CliResult<PathBuf> {
    Ok(config_dir()?.join("session.json"))
}

pub fn load() -> CliResult<Option<SavedSession>> {
    let path = session_path()?;
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            CliError::Failure(format!(
                "{} is damaged ({e}); run `ezforge auth logout` and log in again",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CliError::Failure(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

pub fn save(session: &SavedSession) -> CliResult<PathBuf> {
    let path = session_path()?;
    let dir = path.parent().map(PathBuf::from).unwrap_or_default();
    let io = |e: std::io::Error| CliError::Failure(format!("cannot write {}: {e}", path.display()));
    std::fs::create_dir_all(&dir).map_err(io)?;
    let json = serde_json::to_vec_pretty(session).map_err(|e| CliError::Failure(e.to_string()))?;
    // Write to a private temporary file, then rename, so the secret is never world-readable
    // and a crash never leaves half a file.
    let tmp = dir.join(".session.json.tmp");
    write_private(&tmp, &json).map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)?;
    Ok(path)
}

pub fn delete() -> CliResult<bool> {
    let path = session_path()?;
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(CliError::Failure(format!(
            "cannot remove {}: {e}",
            path.display()
        ))),
    }
}

#[cfg(unix)]
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    if let Some(dir) = path.parent() {
        let _ = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir);
    }
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}
