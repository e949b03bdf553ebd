//! The README's tutorial ("Adding tenancy to a sea-orm app") shows real code: every Rust
//! block marked `<!-- snippet: PATH -->` must appear verbatim in that file, and the
//! command reference has an entry for every binary of the example app.

use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root")
}

fn readme() -> String {
    std::fs::read_to_string(root().join("README.md")).expect("README.md")
}

#[test]
fn tutorial_snippets_are_the_example_code() {
    let readme = readme();
    let mut lines = readme.lines();
    let mut checked = 0;
    while let Some(line) = lines.next() {
        let Some(path) = line.strip_prefix("<!-- snippet: ").and_then(|rest| rest.strip_suffix(" -->")) else {
            continue;
        };
        assert_eq!(lines.next(), Some("```rust"), "a Rust block follows the marker of {path}");
        let snippet: Vec<&str> = lines.by_ref().take_while(|line| *line != "```").collect();
        assert!(!snippet.is_empty(), "empty snippet of {path}");
        let source = std::fs::read_to_string(root().join(path)).unwrap_or_else(|err| panic!("{path}: {err}"));
        let snippet = snippet.join("\n");
        assert!(source.contains(&snippet), "README snippet not found verbatim in {path}:\n{snippet}");
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} snippets found: were the markers removed?");
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
