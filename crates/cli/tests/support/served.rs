//! `ezforge serve` as a test's own process, shared by the binary's end-to-end tests.

use ezforge_testkit::TestDb;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_ezforge");

pub struct Served {
    pub child: Child,
    pub url: String,
    _data: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `ezforge serve` on a free port and reads the URL from its first line.
pub fn serve(db: &TestDb, extra: &[&str]) -> Served {
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .args(["--database-url", &db.url])
        .args(extra)
        .env_remove("EZFORGE_API_KEY")
        .env("EZFORGE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn ezforge serve");
    let mut first = String::new();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    reader.read_line(&mut first).unwrap();
    // Keep draining what the server prints, as a terminal would.
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    let url = first.trim().rsplit(' ').next().unwrap().to_string();
    assert!(
        url.starts_with("http://127.0.0.1:"),
        "unexpected first line: {first}"
    );
    Served {
        child,
        url,
        _data: data,
    }
}
