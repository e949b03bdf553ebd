//! Fleet SQL: `tenantshell -c SQL` with `--tenants a,b`, `--all` or `--isolation MODE`
//! runs the one statement on each selected tenant.
//!
//! # Through each tenant's handle
//!
//! Each tenant's statement runs in a transaction of the tenant's handle
//! ([`tenancy::TenantConnection`]), the same handle the single-tenant shell uses: so the
//! same binding keeps it to its tenant (the tenant's login role, its database, the
//! allowlist on a SQLite master), and the same guard refuses transaction control,
//! session settings and several statements in one input. The guard reads the text only
//! once, before anything connects: a refused statement would be refused for every tenant.
//!
//! # Read-only unless `--write`
//!
//! Without `--write` nothing a statement does is kept, and a statement that writes fails:
//!
//! - on PostgreSQL the transaction is `READ ONLY` (`SET TRANSACTION READ ONLY` as it
//!   begins, which the statement cannot undo: the guard refuses `SET` and `set_config`,
//!   and PostgreSQL refuses read-write mode once a query ran, so a `DO` block cannot
//!   either); a write, a `DO` block or a function that writes, `nextval` fail there, and the
//!   transaction is rolled back;
//! - on SQLite, which has no read-only transaction (`PRAGMA query_only` is a setting of
//!   the pooled connection, which the statement could turn off, and the allowlist of a
//!   table tenant refuses `PRAGMA` anyway), the transaction is always rolled back, and a
//!   statement that changed rows (SQLite's `total_changes()` counted before and after)
//!   is reported as failed. A DDL statement on a SQLite database tenant changes no rows:
//!   it is rolled back like everything else, but reported as run.
//!
//! With `--write` each tenant's statement commits in its own transaction: one tenant's
//! failure leaves the others' changes in place (and its own undone).
//!
//! # Selection
//!
//! `--all` and `--isolation MODE` take every registered tenant (of that mode): ready
//! tenants with relational storage run; the others are listed as skipped with the reason
//! (suspended ones, tenants mid-operation, cache tenants): they are not failures, and a
//! suspended tenant has no handle to run through. `--tenants` names tenants: every id must
//! exist or nothing runs ([`Error::UnknownTenants`]); a named tenant that cannot run (a
//! cache tenant, a suspended one) fails, with the handle's own error.
//!
//! # Output
//!
//! Tenants run `--jobs` at a time and are reported in id order (`--tenants`: in the order
//! given) as they finish: each tenant's rows as the shell prints them, under a line
//! naming the tenant, then a summary. Failures also go to stderr, one line each naming
//! the tenant. `--json` prints one document instead, written as the run goes, as
//! `migratealltenants --json` does. A progress bar shows on stderr when it is a terminal
//! (not with `--json`).

use std::collections::HashSet;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use indicatif::ProgressBar;
use sea_orm::{AccessMode, ConnectionTrait, DbBackend, Statement, TransactionTrait};
use tenancy::{Isolation, Tenancy, Tenant, TenantId, TenantStatus, TenantTransaction};

use super::{Failure, Output, TenantShellArgs};
use crate::cli::Exit;
use crate::{Error, Result};

/// Which tenants the statement runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Selection {
    /// `--tenants`: these, each of which must exist.
    Named(Vec<TenantId>),
    /// `--all` (`None`) or `--isolation`: the ready tenants (of that mode).
    Ready(Option<Isolation>),
}

impl Selection {
    /// The selection the flags make, or `None` for the single-tenant shell.
    pub(super) fn of(args: &TenantShellArgs) -> Option<Selection> {
        match (&args.tenants, args.all, args.isolation) {
            (Some(ids), _, _) => Some(Selection::Named(ids.clone())),
            (None, true, isolation) => Some(Selection::Ready(isolation)),
            (None, false, Some(isolation)) => Some(Selection::Ready(Some(isolation))),
            (None, false, None) => None,
        }
    }
}

/// A selected tenant: run, or listed as skipped with the reason.
struct Planned {
    id: TenantId,
    isolation: Isolation,
    skip: Option<String>,
}

/// One tenant's result.
struct Done {
    id: TenantId,
    isolation: Isolation,
    outcome: Outcome,
    duration: Duration,
}

enum Outcome {
    Ran(Output),
    Failed(String),
    Skipped(String),
}

/// Runs `-c` on the selected tenants; [`Exit::Failed`] when one of them failed.
pub(super) async fn run(args: &TenantShellArgs, selection: Selection) -> Result<Exit> {
    let sql = super::trimmed(args.command.as_deref().unwrap_or_default());
    if sql.is_empty() {
        return Err(Error::Statement { message: "-c is empty: there is no statement to run".to_owned() });
    }
    if sql.starts_with('\\') {
        return Err(Error::Statement {
            message: format!("{sql} runs on one tenant only: tenantshell <tenant_id> -c '{sql}'"),
        });
    }
    // Refused for one tenant is refused for all: said once, before anything connects.
    super::guard(sql).map_err(|message| Error::Statement { message })?;

    let tenancy = args.master.connect().await?;
    let planned = select(&tenancy, &selection).await?;
    let progress = Progress::new(args.json, planned.len());
    let mut report = Report::new(args.json, args.write);
    let jobs = usize::try_from(args.jobs).unwrap_or(1).max(1);
    let (tenancy, progress_ref) = (&tenancy, &progress);
    // `buffered`, not `buffer_unordered`: `jobs` tenants run at once, and the results
    // come out in the selection's order, so the output reads the same on every run.
    let mut results = futures_util::stream::iter(planned)
        .map(|planned| async move {
            let started = Instant::now();
            let outcome = match planned.skip {
                Some(reason) => Outcome::Skipped(reason),
                None => match run_one(tenancy, &planned.id, sql, args.write).await {
                    Ok(output) => Outcome::Ran(output),
                    Err(failure) => Outcome::Failed(describe(failure, args.write)),
                },
            };
            progress_ref.tick(&planned.id);
            Done { id: planned.id, isolation: planned.isolation, outcome, duration: started.elapsed() }
        })
        .buffered(jobs);
    while let Some(done) = results.next().await {
        report.tenant(&done, &progress);
    }
    progress.finish();
    Ok(report.finish())
}

/// The tenants `selection` takes, in id order (`--tenants`: in the order given, each
/// once). Every id named must exist: otherwise nothing runs.
async fn select(tenancy: &Tenancy, selection: &Selection) -> Result<Vec<Planned>> {
    match selection {
        Selection::Named(ids) => {
            let mut seen = HashSet::new();
            let (mut planned, mut unknown) = (Vec::new(), Vec::new());
            for id in ids.iter().filter(|id| seen.insert(*id)) {
                match tenancy.find_tenant(id.clone()).await? {
                    // Run whatever its state: a tenant that cannot run fails with the
                    // handle's own error (suspended, no relational storage, ...).
                    Some(tenant) => planned.push(Planned { id: id.clone(), isolation: tenant.isolation(), skip: None }),
                    None => unknown.push(id.to_string()),
                }
            }
            if !unknown.is_empty() {
                return Err(Error::UnknownTenants { unknown });
            }
            Ok(planned)
        }
        Selection::Ready(isolation) => Ok(tenancy
            .tenants()
            .await?
            .into_iter()
            .filter(|tenant| isolation.is_none_or(|isolation| tenant.isolation() == isolation))
            .map(|tenant| Planned {
                skip: skip_reason(&tenant),
                id: tenant.id().clone(),
                isolation: tenant.isolation(),
            })
            .collect()),
    }
}

/// Why `--all` / `--isolation` lists a tenant without running the statement on it.
fn skip_reason(tenant: &Tenant) -> Option<String> {
    match (tenant.status(), tenant.isolation()) {
        (TenantStatus::Ready, Isolation::Cache) => Some("cache isolation: no relational storage".to_owned()),
        (TenantStatus::Ready, _) => None,
        (status, _) => Some(format!("status is '{status}', not 'ready'")),
    }
}

/// Runs `sql` on one tenant, in a transaction of its handle: read-only and rolled back,
/// or (`write`) committed.
async fn run_one(tenancy: &Tenancy, id: &TenantId, sql: &str, write: bool) -> std::result::Result<Output, Failure> {
    let db = tenancy.tenant(id).await.map_err(|err| Failure::from(err.to_string()))?;
    if db.isolation() == Isolation::Cache {
        let err = Error::NoRelationalStorage { tenant: id.to_string(), what: "fleet SQL" };
        return Err(Failure::from(err.to_string()));
    }
    let postgres = db.get_database_backend() == DbBackend::Postgres;
    // sea-orm ignores an access mode on SQLite (with a warning): there, read-only is the
    // rollback and the count of changes below.
    let access = (postgres && !write).then_some(AccessMode::ReadOnly);
    let txn = db.begin_with_config(None, access).await.map_err(|err| Failure::from(&err))?;
    let counted = !write && !postgres;
    let before = if counted { Some(total_changes(&txn).await?) } else { None };
    let output = match super::statement(&txn, sql).await {
        Ok(output) => output,
        Err(failure) => {
            // Undone; the statement's error is the one to report.
            let _ = txn.rollback().await;
            return Err(failure);
        }
    };
    if write {
        txn.commit().await.map_err(|err| Failure::from(&err))?;
        return Ok(output);
    }
    let changed = match before {
        Some(before) => total_changes(&txn).await?.saturating_sub(before),
        None => 0,
    };
    txn.rollback().await.map_err(|err| Failure::from(&err))?;
    if changed > 0 {
        return Err(Failure {
            message: format!("the statement changed {changed} row(s); rolled back"),
            read_only: true,
        });
    }
    Ok(output)
}

/// SQLite's count of rows changed on the transaction's connection so far.
async fn total_changes(txn: &TenantTransaction) -> std::result::Result<i64, Failure> {
    // language=SQLite
    let statement = Statement::from_string(DbBackend::Sqlite, "SELECT total_changes() AS changes");
    let row = txn.query_one_raw(statement).await.map_err(|err| Failure::from(&err))?;
    row.and_then(|row| row.try_get::<i64>("", "changes").ok())
        .ok_or_else(|| Failure::from("cannot count the rows changed (SELECT total_changes())".to_owned()))
}

/// A tenant's failure in one line; a write refused for being read-only says how to allow it.
fn describe(failure: Failure, write: bool) -> String {
    if failure.read_only && !write {
        format!("{} (read-only: --write commits changes)", failure.message)
    } else {
        failure.message
    }
}

/// The bar on stderr when it is a terminal (and not `--json`).
struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    fn new(json: bool, total: usize) -> Self {
        let bar = (!json && std::io::stderr().is_terminal()).then(|| crate::cli::tenant_bar(total as u64));
        Self { bar }
    }

    /// A tenant finished.
    fn tick(&self, id: &TenantId) {
        if let Some(bar) = &self.bar {
            bar.set_message(id.to_string());
            bar.inc(1);
        }
    }

    /// Prints to stdout without tearing the bar.
    fn print(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| print!("{text}")),
            None => print!("{text}"),
        }
    }

    /// A line on stderr, above the bar.
    fn error(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// What is printed of each tenant as it comes, and the counts for the summary.
struct Report {
    json: bool,
    write: bool,
    ok: usize,
    failed: usize,
    skipped: usize,
}

impl Report {
    fn new(json: bool, write: bool) -> Self {
        if json {
            print!("{{\n  \"write\": {write},\n  \"tenants\": [");
        }
        Self { json, write, ok: 0, failed: 0, skipped: 0 }
    }

    fn tenant(&mut self, done: &Done, progress: &Progress) {
        let (id, isolation) = (&done.id, done.isolation);
        if let Outcome::Failed(message) = &done.outcome {
            progress.error(&format!("Error: tenant '{id}': {message}"));
        }
        if self.json {
            let comma = if self.ok + self.failed + self.skipped == 0 { "" } else { "," };
            progress.print(&format!("{comma}\n    {}", tenant_json(done)));
        } else {
            let text = match &done.outcome {
                Outcome::Ran(Output::Rows(rows)) => format!("-- {id} ({isolation})\n{}\n", super::format_rows(rows)),
                Outcome::Ran(Output::Affected(n)) => format!("-- {id} ({isolation})\n{}\n", super::affected(*n)),
                Outcome::Failed(message) => format!("-- {id} ({isolation}): failed: {message}\n\n"),
                Outcome::Skipped(reason) => format!("-- {id} ({isolation}): skipped: {reason}\n\n"),
            };
            progress.print(&text);
        }
        match done.outcome {
            Outcome::Ran(_) => self.ok += 1,
            Outcome::Failed(_) => self.failed += 1,
            Outcome::Skipped(_) => self.skipped += 1,
        }
    }

    /// The summary; the exit code.
    fn finish(self) -> Exit {
        let Report { json, write, ok, failed, skipped } = self;
        let succeeded = failed == 0;
        if json {
            let summary = serde_json::json!({ "ok": ok, "failed": failed, "skipped": skipped });
            println!("\n  ],\n  \"summary\": {summary},\n  \"succeeded\": {succeeded}\n}}");
        } else {
            let mode =
                if write { "--write: each tenant's changes committed" } else { "read-only: nothing was changed" };
            let total = ok + failed + skipped;
            let plural = if total == 1 { "" } else { "s" };
            println!("{total} tenant{plural}: {ok} ok, {failed} failed, {skipped} skipped ({mode})");
        }
        if succeeded { Exit::Success } else { Exit::Failed }
    }
}

/// One tenant in the JSON document: values typed (numbers as numbers, NULL as null).
fn tenant_json(done: &Done) -> serde_json::Value {
    let mut json = serde_json::json!({
        "tenant": done.id,
        "isolation": done.isolation,
        "duration_ms": u64::try_from(done.duration.as_millis()).unwrap_or(u64::MAX),
    });
    let fields = match &done.outcome {
        Outcome::Ran(Output::Rows(rows)) => {
            let columns = rows.first().map(|row| row.column_names()).unwrap_or_default();
            let rows: Vec<Vec<serde_json::Value>> =
                rows.iter().map(|row| (0..columns.len()).map(|i| super::cell(row, i).to_json()).collect()).collect();
            serde_json::json!({ "outcome": "ok", "columns": columns, "rows": rows })
        }
        Outcome::Ran(Output::Affected(n)) => serde_json::json!({ "outcome": "ok", "rows_affected": n }),
        Outcome::Failed(message) => serde_json::json!({ "outcome": "failed", "error": message }),
        Outcome::Skipped(reason) => serde_json::json!({ "outcome": "skipped", "reason": reason }),
    };
    if let (Some(json), serde_json::Value::Object(fields)) = (json.as_object_mut(), fields) {
        json.extend(fields);
    }
    json
}
