//! `clonetenant` and `createtenant --from` as processes: a clone's data is the template's
//! under the new id; refusals and killed runs leave nothing behind.

use crate::commands::text;
use crate::lifecycle::{Setup, World, expect_ok, killed};

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

/// Every row of the tenant but its tenant column, read through its handle, with the
/// template's id put in place of the clone's so the two compare.
async fn data_as(world: &World, id: &str, as_id: &str) -> String {
    world
        .data(id)
        .await
        .replace(&format!("\"{id}\""), &format!("\"{as_id}\""))
        .replace(&format!("{id} project"), &format!("{as_id} project"))
}

async fn clones_a_template(setup: Setup) {
    let Some(world) = World::new(setup).await else { return };
    expect_ok(&world.create("tmpl", None), "create the template");
    world.seed("tmpl").await;
    let before = world.data("tmpl").await;

    // Killed after copying the template's data, then run again: one clean tenant.
    let mut args = strings(&["--from", "tmpl", "--id", "copy", "--name", "Copy", "--no-input"]);
    if setup.isolation() == "database" {
        // The database flags createtenant takes (`World` names them after the id).
        let database = world.create_args("copy");
        let at = database.iter().position(|arg| arg == "--db-name").expect("--db-name");
        args.extend(database[at..].iter().cloned());
    }
    let out = world.run(env!("CARGO_BIN_EXE_clonetenant"), &args, Some("copy-template"));
    assert!(killed(&out), "{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(world.footprint("copy").await.operation.as_deref(), Some("create"));
    let out = world.run(env!("CARGO_BIN_EXE_clonetenant"), &args, None);
    expect_ok(&out, "clonetenant, run again");
    assert!(text(&out.stdout).contains("copied from template 'tmpl' and verified"), "{}", text(&out.stdout));
    let footprint = world.footprint("copy").await;
    assert_eq!((footprint.registry.as_deref(), footprint.operation), (Some("ready"), None));

    // The clone's rows are the template's, its tenant column the new id.
    let copy = world.data("copy").await;
    assert!(!copy.contains("\"tmpl\""), "a row kept the template's id: {copy}");
    assert_eq!(data_as(&world, "copy", "tmpl").await, before);
    assert_eq!(world.data("tmpl").await, before, "the template is untouched");

    for id in ["copy", "tmpl"] {
        expect_ok(&world.delete(id, &[], None), "delete");
    }
}

#[tokio::test]
async fn clonetenant_clones_postgres_schema() {
    clones_a_template(Setup::PgSchema).await;
}

#[tokio::test]
async fn clonetenant_clones_postgres_database() {
    clones_a_template(Setup::PgDatabase).await;
}

#[tokio::test]
async fn clonetenant_clones_sqlite_database() {
    clones_a_template(Setup::SqliteDatabase).await;
}

#[tokio::test]
async fn clonetenant_refuses_clearly() {
    let Some(world) = World::new(Setup::SqliteTable).await else { return };
    expect_ok(&world.create("tmpl", None), "create the template");
    world.seed("tmpl").await;

    // --from is required.
    let out = world.run(env!("CARGO_BIN_EXE_clonetenant"), &strings(&["--id", "a", "--name", "A", "--no-input"]), None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--from"), "{}", text(&out.stderr));
    // An unknown template: exit 6, nothing created.
    let args = strings(&["--from", "nosuch", "--id", "a", "--name", "A", "--no-input"]);
    let out = world.run(env!("CARGO_BIN_EXE_clonetenant"), &args, None);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("nosuch"), "{}", text(&out.stderr));
    assert_eq!(world.footprint("a").await.registry, None);
    // A table template into the shared tables: its keys are its own there. Exit 9,
    // nothing kept, the template as it was.
    let before = world.data("tmpl").await;
    let args = strings(&["--from", "tmpl", "--id", "b", "--name", "B", "--no-input"]);
    let out = world.run(env!("CARGO_BIN_EXE_createtenant"), &args, None);
    assert_eq!(out.status.code(), Some(9), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("is taken by another tenant's row"), "{}", text(&out.stderr));
    let footprint = world.footprint("b").await;
    assert_eq!((footprint.registry, footprint.operation, footprint.rows), (None, None, 0));
    assert_eq!(world.data("tmpl").await, before);
    // --from with --migrate is a usage error.
    let args = strings(&["--from", "tmpl", "--id", "c", "--name", "C", "--migrate", "--no-input"]);
    let out = world.run(env!("CARGO_BIN_EXE_createtenant"), &args, None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    // Into a database of its own the same template clones fine.
    let args = strings(&[
        "--from",
        "tmpl",
        "--id",
        "d",
        "--name",
        "D",
        "--isolation",
        "database",
        "--db-name",
        "d_db",
        "--no-input",
    ]);
    expect_ok(&world.run(env!("CARGO_BIN_EXE_createtenant"), &args, None), "clone into a database");
    assert_eq!(data_as(&world, "d", "tmpl").await, before);
}
