//! `migratealltenants` on a terminal draws a progress bar instead of per-tenant lines.

use std::process::{Command, Stdio};

use rexpect::process::WaitStatus;
use rexpect::session::spawn_command;
use tenancy_test_support::TempDir;

#[test]
fn progress_bar_on_a_terminal_lines_otherwise() {
    let dir = TempDir::new();
    let url = dir.sqlite_master_url();
    for id in ["alpha", "beta", "gamma"] {
        let status = Command::new(env!("CARGO_BIN_EXE_createtenant"))
            .args(["--id", id, "--name", id, "--isolation", "table", "--no-migrate"])
            .env("DATABASE_URL", &url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
    }

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_migratealltenants"));
    cmd.env("DATABASE_URL", &url).env("TERM", "xterm-256color");
    let mut session = spawn_command(cmd, Some(30_000)).expect("spawn in a pty");
    let screen = session.exp_eof().expect("finishes");
    let code = match session.process().wait().unwrap() {
        WaitStatus::Exited(_, code) => code,
        other => panic!("{other:?}"),
    };
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains("3/3 tenants"), "no progress bar in:\n{screen}");
    assert!(!screen.contains("alpha: migrated"), "per-tenant lines on a terminal:\n{screen}");
    assert!(screen.contains("Summary: 3 migrated"), "{screen}");

    // The same command with its output piped prints one line per tenant and no bar.
    let out = Command::new(env!("CARGO_BIN_EXE_migratealltenants"))
        .env("DATABASE_URL", &url)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    for id in ["alpha", "beta", "gamma"] {
        assert!(stdout.contains(&format!("= {id}: up to date")), "{stdout}");
    }
    assert!(!String::from_utf8_lossy(&out.stderr).contains("tenants"), "a bar without a terminal");
}
