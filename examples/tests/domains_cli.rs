//! `adddomain`, `removedomain` and `showtenants` run as processes against a SQLite master:
//! normalised domains, one owner each, the primary mark, the exit codes and one-line
//! errors, nothing changed by a refused command, and the domains leaving with a deleted
//! tenant and following a renamed one.

use std::process::Output;

use sea_orm::{ConnectionTrait, DbBackend, Statement};
use tenancy::{Isolation, NewTenant, Tenancy};
use tenancy_test_support::TempDir;

use crate::commands::text;

fn command(bin: &str, dir: &TempDir, args: &[&str]) -> Output {
    crate::commands::run(bin, dir, &dir.sqlite_master_url(), args)
}

fn adddomain(dir: &TempDir, args: &[&str]) -> Output {
    command(env!("CARGO_BIN_EXE_adddomain"), dir, args)
}

fn removedomain(dir: &TempDir, args: &[&str]) -> Output {
    command(env!("CARGO_BIN_EXE_removedomain"), dir, args)
}

/// Every row of the domains table: `(domain, tenant, primary)`, by domain.
async fn rows(tenancy: &Tenancy) -> Vec<(String, String, bool)> {
    let sql = "SELECT domain, tenant_id, is_primary FROM tenancy_domains ORDER BY domain";
    let rows = tenancy.master().query_all_raw(Statement::from_string(DbBackend::Sqlite, sql)).await.expect("read");
    rows.iter()
        .map(|row| {
            (row.try_get_by_index(0).unwrap(), row.try_get_by_index(1).unwrap(), row.try_get_by_index(2).unwrap())
        })
        .collect()
}

fn row(domain: &str, tenant: &str, primary: bool) -> (String, String, bool) {
    (domain.to_owned(), tenant.to_owned(), primary)
}

/// A one-line `Error:` on stderr containing `want`, nothing on stdout, exit `code`.
fn refused(out: &Output, code: i32, want: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{stderr}");
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    let error: Vec<&str> = stderr.lines().filter(|line| line.starts_with("Error: ")).collect();
    assert_eq!(error.len(), 1, "{stderr}");
    assert!(error[0].contains(want), "{stderr}");
}

#[tokio::test]
async fn domains_through_the_commands() {
    let dir = TempDir::new();
    let tenancy = dir.sqlite_builder().connect().await.expect("connect");
    for id in ["acme", "globex"] {
        tenancy.create_tenant(NewTenant::new(id, id, Isolation::Cache).expect("new"), &()).await.expect("create");
    }

    let out = adddomain(&dir, &["acme", "Shop.ACME.example."]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "✓ Domain 'shop.acme.example' added to tenant 'acme' (primary)\n");
    let out = adddomain(&dir, &["acme", "bücher.example"]);
    assert_eq!(text(&out.stdout), "✓ Domain 'xn--bcher-kva.example' added to tenant 'acme'\n");
    // Again, now as the primary: the mark moves, nothing else changes.
    let out = adddomain(&dir, &["acme", "xn--bcher-kva.example", "--primary"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "✓ Tenant 'acme' has the domain 'xn--bcher-kva.example' (primary)\n");
    let expected = vec![row("shop.acme.example", "acme", false), row("xn--bcher-kva.example", "acme", true)];
    assert_eq!(rows(&tenancy).await, expected);

    // Refusals: one line each, the documented code, the table unchanged.
    refused(&adddomain(&dir, &["globex", "SHOP.acme.example"]), 3, "already belongs to tenant 'acme'");
    for (input, want) in [
        ("https://shop.globex.example", "without a scheme"),
        ("shop.globex.example:8443", "without a port"),
        ("shop.globex.example/app", "no path"),
        ("10.0.0.1", "IP address"),
        ("localhost", "at least two labels"),
        ("shop..globex.example", "empty label"),
    ] {
        refused(&adddomain(&dir, &["globex", input]), 2, want);
    }
    refused(&adddomain(&dir, &["nobody", "shop.nobody.example"]), 6, "Tenant 'nobody' does not exist");
    refused(&adddomain(&dir, &["Not An Id", "shop.nobody.example"]), 2, "Invalid tenant ID");
    refused(&removedomain(&dir, &["shop.nobody.example"]), 6, "No tenant has the domain 'shop.nobody.example'");
    assert_eq!(rows(&tenancy).await, expected);

    // showtenants lists them, the primary first.
    let out = command(env!("CARGO_BIN_EXE_showtenants"), &dir, &["--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let acme = listed.as_array().expect("array").iter().find(|t| t["tenant"] == "acme").expect("acme");
    assert_eq!(
        acme["domains"],
        serde_json::json!([
            { "domain": "xn--bcher-kva.example", "primary": true },
            { "domain": "shop.acme.example", "primary": false },
        ])
    );
    let out = command(env!("CARGO_BIN_EXE_showtenants"), &dir, &[]);
    let table = text(&out.stdout);
    assert!(table.lines().next().is_some_and(|head| head.trim_end().ends_with("DOMAINS")), "{table}");
    let acme_line = table.lines().find(|line| line.starts_with("acme ")).expect("acme's line");
    assert!(acme_line.trim_end().ends_with("xn--bcher-kva.example*, shop.acme.example"), "{table}");

    // Removing the primary hands the mark on.
    let out = removedomain(&dir, &["XN--BCHER-KVA.example"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "✓ Domain 'xn--bcher-kva.example' removed from tenant 'acme'\n");
    assert_eq!(rows(&tenancy).await, [row("shop.acme.example", "acme", true)]);

    // A renamed tenant keeps its domains; a deleted one takes them along.
    let out = command(env!("CARGO_BIN_EXE_renametenant"), &dir, &["acme", "acme_co", "--yes"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(rows(&tenancy).await, [row("shop.acme.example", "acme_co", true)]);
    let out = command(env!("CARGO_BIN_EXE_deletetenant"), &dir, &["acme_co", "--yes"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(rows(&tenancy).await.is_empty());
    // The domain is free again.
    let out = adddomain(&dir, &["globex", "shop.acme.example"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(rows(&tenancy).await, [row("shop.acme.example", "globex", true)]);
}
