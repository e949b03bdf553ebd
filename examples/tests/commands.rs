//! Running the app's command binaries as a script would: in a test's folder, against a
//! master database, with the key file there and no terminal.

use std::process::{Command, Output, Stdio};

use tenancy_test_support::TempDir;

/// Runs `bin` with `args` in `dir` against the master at `database_url`.
pub(crate) fn run(bin: &str, dir: &TempDir, database_url: &str, args: &[&str]) -> Output {
    Command::new(bin)
        .current_dir(dir.path())
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("TENANCY_SECRET_KEY_FILE", dir.path().join("key"))
        .env_remove("TENANCY_SECRET_KEY")
        .stdin(Stdio::null())
        .output()
        .expect("run command")
}

/// Output bytes as text.
pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
