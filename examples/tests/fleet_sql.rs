//! Fleet SQL: `tenantshell -c SQL` with `--tenants`, `--all` or `--isolation`, one
//! statement per tenant through each tenant's handle. Checked on the tenants' rows as the
//! database holds them, not only on exit codes.

use std::collections::BTreeMap;

use sea_orm::{ConnectionTrait, Statement};
use tenancy::{Isolation, Tenancy, TenantId};
use tenancy_test_support::{PgMaster, TempDir, count, unique_name};

use crate::tenantshell::{add_named_projects, create, shell, text};

/// On one PostgreSQL master: schema tenants `s1` (1 project), `s2` (2), table tenants `t1`
/// (3), `t2` (4), database tenant `d` (5), a cache tenant and a suspended schema tenant.
struct Fleet {
    pg: PgMaster,
    dir: TempDir,
    tenancy: Tenancy,
    s1: TenantId,
    s2: TenantId,
    t1: TenantId,
    t2: TenantId,
    d: TenantId,
    cache: TenantId,
    suspended: TenantId,
}

impl Fleet {
    /// The tenants that run (ready, with tables) and their numbers of projects.
    fn seeded(&self) -> [(&TenantId, i64); 5] {
        [(&self.s1, 1), (&self.s2, 2), (&self.t1, 3), (&self.t2, 4), (&self.d, 5)]
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        shell(&self.dir, &self.pg.url, args)
    }

    async fn names(&self, tenant: &TenantId) -> Vec<String> {
        project_names(&self.tenancy, tenant).await
    }

    /// Every running tenant's project names.
    async fn all_names(&self) -> BTreeMap<TenantId, Vec<String>> {
        let mut all = BTreeMap::new();
        for (tenant, _) in self.seeded() {
            all.insert(tenant.clone(), self.names(tenant).await);
        }
        all
    }
}

/// The tenant's project names, through its handle (its own rows, whatever the mode).
async fn project_names(tenancy: &Tenancy, tenant: &TenantId) -> Vec<String> {
    let handle = tenancy.tenant(tenant).await.unwrap();
    let sql = "SELECT name FROM projects ORDER BY name";
    let rows = handle.query_all_raw(Statement::from_string(handle.get_database_backend(), sql)).await.unwrap();
    rows.iter().map(|row| row.try_get_by_index::<String>(0).unwrap()).collect()
}

async fn fleet() -> Option<Fleet> {
    let pg = PgMaster::create().await?;
    let dir = TempDir::new();
    let tenancy = pg.tenancy(&dir).await;
    let s1 = create(&tenancy, &unique_name("s1"), Isolation::Schema, None).await;
    let s2 = create(&tenancy, &unique_name("s2"), Isolation::Schema, None).await;
    let t1 = create(&tenancy, &unique_name("t1"), Isolation::Table, None).await;
    let t2 = create(&tenancy, &unique_name("t2"), Isolation::Table, None).await;
    let d = create(&tenancy, &unique_name("d"), Isolation::Database, Some(pg.new_database("fleet sql db"))).await;
    let cache = create(&tenancy, &unique_name("c"), Isolation::Cache, None).await;
    let suspended = create(&tenancy, &unique_name("s3"), Isolation::Schema, None).await;
    let names = ["a", "b", "c", "d", "e"];
    for (tenant, n) in [(&s1, 1), (&s2, 2), (&t1, 3), (&t2, 4), (&d, 5), (&suspended, 1)] {
        add_named_projects(&tenancy, tenant, &names[..n]).await;
    }
    tenancy.suspend_tenant(suspended.clone(), Some("unpaid".to_owned())).await.unwrap();
    Some(Fleet { pg, dir, tenancy, s1, s2, t1, t2, d, cache, suspended })
}

/// Each tenant's block of the text output: the line after `-- id (mode)` up to the blank
/// line, keyed by tenant, with the header line's rest (`: skipped: ...`).
fn blocks(stdout: &str) -> BTreeMap<String, (String, Vec<String>)> {
    let mut blocks = BTreeMap::new();
    for block in stdout.split("\n\n") {
        let mut lines = block.lines();
        let Some(header) = lines.next().and_then(|line| line.strip_prefix("-- ")) else { continue };
        let (id, rest) = header.split_once(' ').unwrap();
        let body = lines.map(str::to_owned).collect();
        blocks.insert(id.to_owned(), (rest.to_owned(), body));
    }
    blocks
}

/// `--all` runs the statement on each tenant of every mode with tables, each seeing its
/// own rows; cache and suspended tenants are listed as skipped. `--json` carries the
/// same, typed; `--isolation schema` takes the schema tenants only.
#[tokio::test]
async fn all_counts_each_tenants_own_rows_in_text_and_json() {
    let Some(f) = fleet().await else { return };
    let out = f.run(&["--all", "-c", "SELECT count(*) AS n FROM projects"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let shown = blocks(&stdout);
    for (tenant, n) in f.seeded() {
        let (header, body) = &shown[tenant.as_str()];
        assert!(header.starts_with('('), "{tenant}: {header}");
        assert_eq!(body[0].trim(), "n", "{stdout}");
        assert_eq!(body[2].trim(), n.to_string(), "{tenant}:\n{stdout}");
        assert_eq!(body[3], "(1 row)");
    }
    let isolation_of = |id: &TenantId| shown[id.as_str()].0.clone();
    assert_eq!(isolation_of(&f.s1), "(schema)");
    assert_eq!(isolation_of(&f.t1), "(table)");
    assert_eq!(isolation_of(&f.d), "(database)");
    assert_eq!(isolation_of(&f.cache), "(cache): skipped: cache isolation: no relational storage");
    assert_eq!(isolation_of(&f.suspended), "(schema): skipped: status is 'suspended', not 'ready'");
    assert!(stdout.ends_with("7 tenants: 5 ok, 0 failed, 2 skipped (read-only: nothing was changed)\n"), "{stdout}");
    assert_eq!(text(&out.stderr), "");

    let out = f.run(&[
        "--all",
        "--json",
        "--jobs",
        "2",
        "-c",
        "SELECT count(*) AS n, NULL::text AS nothing, 2.50::numeric AS price, 'x' AS word FROM projects",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    let tenants: BTreeMap<&str, &serde_json::Value> =
        json["tenants"].as_array().unwrap().iter().map(|t| (t["tenant"].as_str().unwrap(), t)).collect();
    assert_eq!(tenants.len(), 7);
    for (tenant, n) in f.seeded() {
        let t = tenants[tenant.as_str()];
        assert_eq!(t["outcome"], "ok", "{t}");
        assert_eq!(t["columns"], serde_json::json!(["n", "nothing", "price", "word"]), "{t}");
        assert_eq!(t["rows"], serde_json::json!([[n, null, 2.5, "x"]]), "{t}");
    }
    assert_eq!(tenants[f.cache.as_str()]["outcome"], "skipped");
    assert_eq!(tenants[f.suspended.as_str()]["isolation"], "schema");
    assert_eq!(tenants[f.suspended.as_str()]["outcome"], "skipped");
    assert_eq!(json["summary"], serde_json::json!({ "ok": 5, "failed": 0, "skipped": 2 }));
    assert_eq!(json["succeeded"], true);
    assert_eq!(json["write"], false);

    // --isolation filters the fleet: the schema tenants only.
    let out = f.run(&["--isolation", "schema", "-c", "SELECT count(*) FROM projects"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let ids: Vec<String> = blocks(&stdout).into_keys().collect();
    let mut expected = vec![f.s1.to_string(), f.s2.to_string(), f.suspended.to_string()];
    expected.sort();
    assert_eq!(ids, expected, "{stdout}");
    assert!(stdout.ends_with("3 tenants: 2 ok, 0 failed, 1 skipped (read-only: nothing was changed)\n"), "{stdout}");
}

/// Without --write a write fails on every tenant and changes nothing, whether it is a
/// plain UPDATE or a DO block (even one that tries to turn the transaction read-write);
/// with --write it commits on the tenants named, and only on those.
#[tokio::test]
async fn read_only_by_default_and_write_commits_on_the_named_tenants_only() {
    let Some(f) = fleet().await else { return };
    let before = f.all_names().await;
    for sql in [
        "UPDATE projects SET name = 'x'",
        "DO $$ BEGIN UPDATE projects SET name = 'x'; END $$",
        "DO $$ BEGIN EXECUTE 'SET TRANSACTION READ WRITE'; UPDATE projects SET name = 'x'; END $$",
        "INSERT INTO projects (tenant_id, name, created_at) SELECT tenant_id, 'x', now() FROM projects LIMIT 1",
    ] {
        let out = f.run(&["--all", "-c", sql]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{sql}: {}{stderr}", text(&out.stdout));
        // One line per tenant that ran, naming it.
        assert_eq!(stderr.lines().count(), 5, "{sql}: {stderr}");
        for (tenant, _) in f.seeded() {
            let line = stderr
                .lines()
                .find(|line| line.starts_with(&format!("Error: tenant '{tenant}': ")))
                .unwrap_or_else(|| panic!("{sql}: no line for {tenant}: {stderr}"));
            // PostgreSQL's refusal: of the write, or of turning the transaction read-write.
            assert!(line.contains("read-only transaction") || line.contains("read-write mode"), "{sql}: {line}");
        }
        assert!(text(&out.stdout).ends_with("7 tenants: 0 ok, 5 failed, 2 skipped (read-only: nothing was changed)\n"));
        assert_eq!(f.all_names().await, before, "{sql} changed rows");
    }
    let master = f.pg.connect().await;
    assert_eq!(count(&master, "SELECT count(*) FROM public.projects WHERE name = 'x'", vec![]).await, 0);

    // --write: the named tenants' rows change, one transaction each; the others' do not.
    let (s1, t1) = (f.s1.as_str(), f.t1.as_str());
    let out = f.run(&["--tenants", &format!("{t1}, {s1}"), "--write", "-c", "UPDATE projects SET name = name || '!'"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    // In the order given.
    assert!(
        stdout.starts_with(&format!("-- {t1} (table)\nOK, 3 rows affected\n\n-- {s1} (schema)\nOK, 1 row affected\n")),
        "{stdout}"
    );
    assert!(stdout.ends_with("2 tenants: 2 ok, 0 failed, 0 skipped (--write: each tenant's changes committed)\n"));
    let after = f.all_names().await;
    for (tenant, _) in f.seeded() {
        let expected: Vec<String> = if [s1, t1].contains(&tenant.as_str()) {
            before[tenant].iter().map(|name| format!("{name}!")).collect()
        } else {
            before[tenant].clone()
        };
        assert_eq!(after[tenant], expected, "{tenant}");
    }
    // t2's rows in the shared table, as the superuser sees them: untouched.
    let bangs = "SELECT count(*) FROM public.projects WHERE name LIKE '%!' AND tenant_id = $1";
    assert_eq!(count(&master, bangs, vec![f.t2.as_str().into()]).await, 0);
    assert_eq!(count(&master, bangs, vec![t1.into()]).await, 3);
}

/// Hostile statements through the fleet runner, with --write, reach no other tenant: a
/// schema tenant naming another's schema, a table tenant naming another tenant in the
/// setting the policies fall back to, or filtering on its id. The guard refuses
/// set_config before anything connects.
#[tokio::test]
async fn hostile_statements_stay_within_their_tenant() {
    let Some(f) = fleet().await else { return };
    let before = f.all_names().await;
    let (s1, s2, t1, t2) = (f.s1.as_str(), f.s2.as_str(), f.t1.as_str(), f.t2.as_str());
    let q = tenancy::sql::quote_literal;

    let sql = format!("SELECT count(*) FROM {}.projects", tenancy::sql::quote_ident(s2));
    let out = f.run(&["--tenants", s1, "--write", "-c", &sql]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr), format!("Error: tenant '{s1}': permission denied for schema {s2}\n"));

    let sql = format!(
        "DO $$ BEGIN EXECUTE 'SET tenancy.tenant_id = ' || quote_literal({}); UPDATE projects SET name = 'pwned'; END $$",
        q(t2)
    );
    let out = f.run(&["--tenants", t1, "--write", "-c", &sql]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = f.run(&["--tenants", t1, "-c", &format!("SELECT count(*) FROM projects WHERE tenant_id = {}", q(t2))]);
    assert_eq!(blocks(&text(&out.stdout))[t1].1[2].trim(), "0", "{}", text(&out.stdout));

    let sql = format!("SELECT set_config('tenancy.tenant_id', {}, false), count(*) FROM projects", q(t2));
    let out = f.run(&["--all", "--write", "-c", &sql]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).starts_with("Error: set_config() is not available"), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "", "nothing ran");

    let after = f.all_names().await;
    assert_eq!(after[&f.t1], ["pwned", "pwned", "pwned"], "the DO block ran on t1's own rows");
    for tenant in [&f.s1, &f.s2, &f.t2, &f.d] {
        assert_eq!(after[tenant], before[tenant], "{tenant}");
    }
}

/// A tenant that fails does not stop the others; the exit code says so and the failure
/// line names it. Unknown tenants stop the run before anything runs; a named cache
/// tenant fails on its own.
#[tokio::test]
async fn a_failing_tenant_and_unknown_or_unrunnable_named_tenants() {
    let Some(f) = fleet().await else { return };
    let master = f.pg.connect().await;
    let s2 = f.s2.as_str();
    master.execute_unprepared(&format!("DROP TABLE {}.projects CASCADE", tenancy::sql::quote_ident(s2))).await.unwrap();
    let out = f.run(&["--all", "-j", "1", "-c", "SELECT count(*) FROM projects"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert_eq!(text(&out.stderr), format!("Error: tenant '{s2}': relation \"projects\" does not exist\n"));
    let shown = blocks(&stdout);
    assert_eq!(shown[s2].0, "(schema): failed: relation \"projects\" does not exist");
    for (tenant, n) in f.seeded() {
        if tenant != &f.s2 {
            assert_eq!(shown[tenant.as_str()].1[2].trim(), n.to_string(), "{stdout}");
        }
    }
    assert!(stdout.ends_with("7 tenants: 4 ok, 1 failed, 2 skipped (read-only: nothing was changed)\n"), "{stdout}");

    // Unknown ids: named all at once, nothing runs (not even for the known one).
    let before = f.names(&f.s1).await;
    let s1 = f.s1.as_str();
    let out = f.run(&["--tenants", &format!("{s1},nosuch,ghost"), "--write", "-c", "UPDATE projects SET name = 'x'"]);
    assert_eq!(out.status.code(), Some(6));
    assert_eq!(text(&out.stderr), "Error: No such tenant(s): nosuch, ghost; nothing was run\n");
    assert_eq!(text(&out.stdout), "");
    assert_eq!(f.names(&f.s1).await, before);

    // Named tenants that cannot run fail, each on its own line; the others run.
    let (cache, suspended) = (f.cache.as_str(), f.suspended.as_str());
    let out = f.run(&["--tenants", &format!("{cache},{s1},{suspended}"), "-c", "SELECT 1"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(lines[0].starts_with(&format!("Error: tenant '{cache}': ")), "{stderr}");
    assert!(lines[0].contains("no relational storage"), "{stderr}");
    assert!(lines[1].starts_with(&format!("Error: tenant '{suspended}': ")), "{stderr}");
    assert!(lines[1].contains("suspended"), "{stderr}");
    assert!(text(&out.stdout).ends_with("3 tenants: 1 ok, 2 failed, 0 skipped (read-only: nothing was changed)\n"));
}

/// Wrong combinations are usage errors (exit 2) before anything connects.
#[test]
fn wrong_combinations_are_usage_errors() {
    let dir = TempDir::new();
    // Nothing listens there: a run that got as far as connecting would say so (exit 4).
    let url = "postgres://nobody@127.0.0.1:1/none";
    for (args, said) in [
        (&["-c", "SELECT 1"][..], "the following required arguments were not provided"),
        (&["--all", "acme", "-c", "SELECT 1"][..], "cannot be used with"),
        (&["--all", "--tenants", "a,b", "-c", "SELECT 1"][..], "cannot be used with"),
        (&["--all", "--isolation", "schema", "-c", "SELECT 1"][..], "cannot be used with"),
        (&["--all"][..], "--command <SQL>"),
        (&["acme", "--write", "-c", "SELECT 1"][..], "--write"),
        (&["acme", "--json", "-c", "SELECT 1"][..], "--json"),
        (&["--all", "--jobs", "0", "-c", "SELECT 1"][..], "--jobs"),
        (&["--tenants", "Not An Id", "-c", "SELECT 1"][..], "Not An Id"),
    ] {
        let out = shell(&dir, url, args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(said), "{args:?}: {stderr}");
    }
}

/// On a SQLite master (table and database tenants): counts per tenant; a write without
/// --write fails on each tenant and is rolled back; with --write it commits on the named
/// tenant only.
#[tokio::test]
async fn sqlite_master_read_only_and_write() {
    let dir = TempDir::new();
    let url = dir.sqlite_master_url();
    let tenancy = dir.sqlite_builder().connect().await.unwrap();
    let ta = create(&tenancy, "ta", Isolation::Table, None).await;
    let tb = create(&tenancy, "tb", Isolation::Table, None).await;
    let db = create(&tenancy, "db", Isolation::Database, Some(tenancy::NewDatabase::create("db_file"))).await;
    for (tenant, names) in [(&ta, &["a"][..]), (&tb, &["a", "b"][..]), (&db, &["a", "b", "c"][..])] {
        add_named_projects(&tenancy, tenant, names).await;
    }
    let names = async |tenant: &TenantId| project_names(&tenancy, tenant).await;

    let out = shell(&dir, &url, &["--all", "--json", "-c", "SELECT count(*) AS n FROM projects"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let counts: Vec<(String, i64)> = json["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["tenant"].as_str().unwrap().to_owned(), t["rows"][0][0].as_i64().unwrap()))
        .collect();
    assert_eq!(counts, [("db".to_owned(), 3), ("ta".to_owned(), 1), ("tb".to_owned(), 2)]);

    let out = shell(&dir, &url, &["--all", "-c", "UPDATE projects SET name = 'x'"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "Error: tenant 'db': the statement changed 3 row(s); rolled back (read-only: --write commits changes)\n\
         Error: tenant 'ta': the statement changed 1 row(s); rolled back (read-only: --write commits changes)\n\
         Error: tenant 'tb': the statement changed 2 row(s); rolled back (read-only: --write commits changes)\n"
    );
    for (tenant, n) in [(&ta, 1), (&tb, 2), (&db, 3)] {
        let names = names(tenant).await;
        assert_eq!(names.len(), n);
        assert!(names.iter().all(|name| name.starts_with(tenant.as_str())), "{names:?}");
    }

    let out = shell(&dir, &url, &["--tenants", "ta", "--write", "-c", "UPDATE projects SET name = 'x'"]);
    assert_eq!(
        text(&out.stdout),
        "-- ta (table)\nOK, 1 row affected\n\n1 tenant: 1 ok, 0 failed, 0 skipped (--write: each tenant's changes committed)\n",
        "{}",
        text(&out.stderr)
    );
    assert_eq!(names(&ta).await, ["x"]);
    assert_eq!(names(&tb).await, ["tb-a", "tb-b"]);
}
