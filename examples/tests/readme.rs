//! The README's tutorial ("Adding tenancy to a sea-orm app") is a real crate: every block
//! marked `<!-- file: PATH -->` is a whole file of it, and the crate must build outside this
//! workspace and work. The command reference has an entry for every binary of the example
//! app.

use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root")
}

fn readme() -> String {
    std::fs::read_to_string(root().join("README.md")).expect("README.md")
}

#[test]
fn command_reference_covers_every_binary() {
    let readme = readme();
    let reference = readme.split_once("\n## Command reference\n").expect("a command reference section").1;
    let mut commands: Vec<String> = std::fs::read_dir(root().join("examples/src/bin"))
        .expect("bin folder")
        .map(|entry| entry.expect("entry").path().file_stem().expect("name").to_string_lossy().into_owned())
        .collect();
    commands.extend(["createtenantsuperuser".to_owned(), "tenantshell".to_owned()]);
    for command in commands {
        assert!(reference.contains(&format!("\n### `{command}")), "no reference entry for {command}");
    }
}

/// The README's table of exit codes is the one the commands' `--help` is made from.
#[test]
fn exit_code_table_is_the_commands_own() {
    let readme = readme();
    let section = readme.split_once("\n### Exit codes\n").expect("an exit codes section").1;
    let table: String = section
        .lines()
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        .map(|line| format!("{line}\n"))
        .collect();
    assert_eq!(table, tenancy_migrate::cli::Exit::table(), "README.md's exit codes differ from cli::Exit");
}

/// Each command's entry in the README's command reference names the exit codes its
/// `--help` names (which `cli::Exit` builds), no more and no fewer, in the same order.
#[test]
fn each_command_reference_names_the_exit_codes_of_its_help() {
    let readme = readme();
    let reference = readme.split_once("\n## Command reference\n").expect("a command reference section").1;
    let reference = reference.split("\n## ").next().unwrap_or_default();
    let binaries = [
        ("createtenant", env!("CARGO_BIN_EXE_createtenant")),
        ("clonetenant", env!("CARGO_BIN_EXE_clonetenant")),
        ("movetenant", env!("CARGO_BIN_EXE_movetenant")),
        ("createtenantsuperuser", env!("CARGO_BIN_EXE_createtenantsuperuser")),
        ("deletetenant", env!("CARGO_BIN_EXE_deletetenant")),
        ("migratealltenants", env!("CARGO_BIN_EXE_migratealltenants")),
        ("migratetenant", env!("CARGO_BIN_EXE_migratetenant")),
        ("serve", env!("CARGO_BIN_EXE_serve")),
        ("showtenants", env!("CARGO_BIN_EXE_showtenants")),
        ("suspendtenant", env!("CARGO_BIN_EXE_suspendtenant")),
        ("resumetenant", env!("CARGO_BIN_EXE_resumetenant")),
        ("renametenant", env!("CARGO_BIN_EXE_renametenant")),
        ("tenantshell", env!("CARGO_BIN_EXE_tenantshell")),
        ("tenancydoctor", env!("CARGO_BIN_EXE_tenancydoctor")),
        ("addserver", env!("CARGO_BIN_EXE_addserver")),
        ("showservers", env!("CARGO_BIN_EXE_showservers")),
        ("drainserver", env!("CARGO_BIN_EXE_drainserver")),
        ("undrainserver", env!("CARGO_BIN_EXE_undrainserver")),
        ("adddomain", env!("CARGO_BIN_EXE_adddomain")),
        ("removedomain", env!("CARGO_BIN_EXE_removedomain")),
    ];
    for (command, binary) in binaries {
        let entry = reference
            .split("\n### `")
            .find(|entry| entry.starts_with(command) && entry[command.len()..].starts_with(['`', ' ']))
            .unwrap_or_else(|| panic!("no reference entry for {command}"));
        let entry = entry.split_whitespace().collect::<Vec<_>>().join(" ");
        let sentence = entry.split_once("Exit codes: ").unwrap_or_else(|| panic!("{command}: no exit codes")).1;
        // The sentence ends at the first full stop outside parentheses.
        let mut depth = 0_i32;
        let end = sentence
            .char_indices()
            .find(|&(_, c)| {
                depth += match c {
                    '(' => 1,
                    ')' => -1,
                    _ => 0,
                };
                c == '.' && depth == 0
            })
            .map_or(sentence.len(), |(at, _)| at);
        let documented: Vec<u8> = sentence[..end]
            .split(';')
            .map(|part| {
                let code = part.trim().split(' ').next().unwrap_or_default();
                code.parse().unwrap_or_else(|_| panic!("{command}: '{part}' does not start with a code"))
            })
            .collect();
        let help = std::process::Command::new(binary).arg("--help").output().expect("run --help");
        let help = String::from_utf8_lossy(&help.stdout).into_owned();
        let codes = help.split_once("Exit codes:").unwrap_or_else(|| panic!("{command} --help: no exit codes")).1;
        let helped: Vec<u8> = codes.lines().filter_map(|line| line.trim().split(' ').next()?.parse().ok()).collect();
        assert_eq!(documented, helped, "{command}: README.md's exit codes differ from its --help");
        let known: Vec<u8> = tenancy_migrate::cli::Exit::ALL.iter().map(|exit| exit.code()).collect();
        assert!(helped.iter().all(|code| known.contains(code)), "{command}: {helped:?} outside {known:?}");
    }
}

/// The files of the tutorial's app: every code block after a `<!-- file: PATH -->` marker,
/// as `(PATH, contents)`.
fn tutorial_files(readme: &str) -> Vec<(String, String)> {
    let mut files = Vec::new();
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        let Some(path) = line.strip_prefix("<!-- file: ").and_then(|rest| rest.strip_suffix(" -->")) else {
            continue;
        };
        let fence = lines.next().unwrap_or_default();
        assert!(fence == "```rust" || fence == "```toml", "a Rust or TOML block follows the marker of {path}");
        let body: Vec<&str> = lines.by_ref().take_while(|line| *line != "```").collect();
        files.push((path.to_owned(), body.join("\n") + "\n"));
    }
    files
}

/// Writes `contents` to `path` unless it already holds exactly that, so that cargo does
/// not rebuild an unchanged app.
fn write_if_changed(path: &Path, contents: &str) {
    if std::fs::read_to_string(path).ok().as_deref() == Some(contents) {
        return;
    }
    std::fs::create_dir_all(path.parent().expect("a parent folder")).expect("create folder");
    std::fs::write(path, contents).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
}

/// Runs `command` to completion within `limit`, killing it past that.
fn output_within(mut command: std::process::Command, limit: std::time::Duration) -> std::process::Output {
    let mut child = command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let started = std::time::Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("{command:?} did not finish within {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    child.wait_with_output().expect("output")
}

/// The tutorial, as a user would follow it: its blocks are the files of a new crate
/// outside this workspace (only the git dependencies become paths to this checkout, and
/// this workspace's lock file pins the same versions offline), which must build. Then its
/// binaries run on the embedded SQLite default: two table tenants, the commands, the
/// shell's isolation and the HTTP service.
#[test]
fn tutorial_builds_and_runs_as_an_outside_crate() {
    let readme = readme();
    let files = tutorial_files(&readme);
    let paths: Vec<&str> = files.iter().map(|(path, _)| path.as_str()).collect();
    for expected in [
        "Cargo.toml",
        "src/lib.rs",
        "src/entities.rs",
        "src/migration.rs",
        "src/main.rs",
        "src/bin/createtenant.rs",
        "src/bin/migratetenant.rs",
        "src/bin/migratealltenants.rs",
        "src/bin/showtenants.rs",
        "src/bin/createtenantsuperuser.rs",
        "src/bin/tenantshell.rs",
    ] {
        assert!(paths.contains(&expected), "the tutorial has no block for {expected}: {paths:?}");
    }

    let work = root().join("target").join("readme-tutorial");
    let app = work.join("tracker");
    for (path, contents) in &files {
        let contents = if path == "Cargo.toml" {
            const GIT: &str = "git = \"https://github.com/tenancy-rs/tenancy\"";
            assert_eq!(contents.matches(GIT).count(), 2, "tenancy and tenancy-migrate come from git:\n{contents}");
            let mut manifest = contents
                .replacen(GIT, &format!("path = {:?}", root().join("tenancy").display().to_string()), 1)
                .replacen(GIT, &format!("path = {:?}", root().join("tenancy-migrate").display().to_string()), 1);
            // A crate of its own, not a member of the workspace it sits under.
            manifest.push_str("\n[workspace]\n");
            manifest
        } else {
            contents.clone()
        };
        write_if_changed(&app.join(path), &contents);
    }
    if !app.join("Cargo.lock").exists() {
        std::fs::copy(root().join("Cargo.lock"), app.join("Cargo.lock")).expect("copy the lock file");
    }

    let build = |offline: bool| {
        let mut build = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
        build.current_dir(&app).args(["build", "--bins", "--quiet"]).env("CARGO_TARGET_DIR", work.join("target"));
        if offline {
            build.arg("--offline");
        }
        output_within(build, std::time::Duration::from_secs(1800))
    };
    // The workspace's build has downloaded every crate the tutorial names; should a
    // feature need one more, the registry is asked.
    let mut built = build(true);
    if !built.status.success() && String::from_utf8_lossy(&built.stderr).contains("offline") {
        built = build(false);
    }
    assert!(built.status.success(), "the tutorial's crate does not build:\n{}", String::from_utf8_lossy(&built.stderr));

    let bin = |name: &str| work.join("target").join("debug").join(name);
    let dir = tenancy_test_support::TempDir::new();
    let run = |name: &str, args: &[&str]| {
        let mut cmd = std::process::Command::new(bin(name));
        cmd.current_dir(dir.path())
            .args(args)
            .env_remove("DATABASE_URL")
            .env_remove("TENANCY_SECRET_KEY")
            .env("TENANCY_SECRET_KEY_FILE", dir.path().join("secret.key"))
            .env("TENANT_SUPERUSER_PASSWORD", "correct horse battery");
        let out = output_within(cmd, std::time::Duration::from_secs(60));
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let ok = |name: &str, args: &[&str]| {
        let (code, stdout, stderr) = run(name, args);
        assert_eq!(code, Some(0), "{name} {args:?}:\n{stdout}\n{stderr}");
        stdout
    };

    for id in ["acme", "globex"] {
        ok("createtenant", &["--no-input", "--id", id, "--name", id, "--isolation", "table", "--migrate"]);
    }
    ok("migratealltenants", &[]);
    ok("tenantshell", &["acme", "-c", "INSERT INTO projects (name) VALUES ('acme roadmap')"]);
    ok("tenantshell", &["globex", "-c", "INSERT INTO projects (name) VALUES ('globex secret')"]);
    let seen = ok("tenantshell", &["acme", "-c", "SELECT tenant_id, name FROM projects"]);
    assert!(seen.contains("acme roadmap") && !seen.contains("globex"), "acme's shell shows:\n{seen}");
    // A task may name only a project of its own tenant: the composite foreign key.
    let (code, _, stderr) =
        run("tenantshell", &["acme", "-c", "INSERT INTO tasks (project_id, title) VALUES (2, 'x')"]);
    assert_eq!(code, Some(1), "a task on globex's project: {stderr}");
    ok("tenantshell", &["acme", "-c", "INSERT INTO tasks (project_id, title) VALUES (1, 'plan')"]);
    // The shared plans are readable, not writable; the registry is out of reach.
    let plans = ok("tenantshell", &["acme", "-c", "SELECT code FROM plans ORDER BY code"]);
    assert!(plans.contains("free") && plans.contains("pro"), "{plans}");
    for refused in ["UPDATE plans SET price_cents = 0", "SELECT * FROM tenancy_tenants"] {
        let (code, stdout, stderr) = run("tenantshell", &["acme", "-c", refused]);
        assert_eq!(code, Some(1), "{refused} was not refused:\n{stdout}\n{stderr}");
    }
    ok(
        "createtenantsuperuser",
        &["--no-input", "--tenant", "acme", "--username", "admin", "--email", "admin@example.com"],
    );
    let listed = ok("showtenants", &["--json"]);
    assert!(listed.contains("\"acme\"") && listed.contains("\"globex\""), "{listed}");

    // The service: acme.localhost is tenant acme, and it sees acme's project only.
    let mut server = std::process::Command::new(bin("tracker"))
        .current_dir(dir.path())
        .env_remove("DATABASE_URL")
        .env("TRACKER_BIND", "127.0.0.1:0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the tracker");
    let mut first = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(server.stdout.take().expect("stdout")), &mut first)
        .expect("the address line");
    let addr = first.trim().strip_prefix("listening on http://").unwrap_or_else(|| panic!("{first}")).to_owned();
    let get = |host: &str| {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&addr).expect("connect");
        stream.set_read_timeout(Some(std::time::Duration::from_secs(30))).expect("timeout");
        write!(stream, "GET /projects HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").expect("request");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("response");
        response
    };
    let acme = get("acme.localhost");
    let nobody = get("nobody.localhost");
    let _ = server.kill();
    let _ = server.wait();
    assert!(acme.starts_with("HTTP/1.1 200") && acme.contains("acme roadmap") && !acme.contains("globex"), "{acme}");
    assert!(nobody.starts_with("HTTP/1.1 404"), "{nobody}");
}
