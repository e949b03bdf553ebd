//! The spans tenancy opens, captured with a `tracing-subscriber` layer: every statement
//! through a handle, the handle itself, lifecycle operations and fleet steps carry the
//! tenant id and its isolation, and no field holds a bound value or a password.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use example_app::entities::project;
use sea_orm::{ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, Statement, TransactionTrait};
use tenancy::{Isolation, NewTenant, Tenancy};
use tenancy_migrate::fleet::{FleetOptions, migrate_all};
use tenancy_test_support::{PgMaster, TempDir, unique_name};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// A span as it was when it closed: its name and every field recorded.
#[derive(Clone, Debug)]
struct Captured {
    name: &'static str,
    fields: BTreeMap<String, String>,
}

/// Records closed spans.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Captured>>>);

struct Fields(BTreeMap<String, String>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields(BTreeMap::new());
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(fields) = span.extensions_mut().get_mut::<Fields>()
        {
            values.record(fields);
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(&id) {
            let fields = span.extensions_mut().remove::<Fields>().map(|fields| fields.0).unwrap_or_default();
            self.0.lock().expect("lock").push(Captured { name: span.name(), fields });
        }
    }
}

impl Capture {
    fn spans(&self, name: &str) -> Vec<Captured> {
        self.0.lock().expect("lock").iter().filter(|span| span.name == name).cloned().collect()
    }

    fn all(&self) -> Vec<Captured> {
        self.0.lock().expect("lock").clone()
    }
}

/// `(tenant, isolation, extra)` of the spans named `name`, `extra` being the field `key`.
fn tagged(capture: &Capture, name: &str, key: &str) -> Vec<(String, String, String)> {
    let field = |span: &Captured, name: &str| span.fields.get(name).cloned().unwrap_or_default();
    let mut tagged: Vec<_> = capture
        .spans(name)
        .iter()
        .map(|span| (field(span, "tenant"), field(span, "isolation"), field(span, key)))
        .collect();
    tagged.sort();
    tagged.dedup();
    tagged
}

#[tokio::test]
async fn statements_handles_operations_and_fleet_steps_carry_the_tenant() {
    let Some(pg) = PgMaster::create().await else { return };
    let dir = TempDir::new();
    let tenancy: Tenancy = pg.tenancy(&dir).await;
    let capture = Capture::default();
    let _default = tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));

    let (schema, table, database) = (unique_name("tr_s"), unique_name("tr_t"), unique_name("tr_d"));
    let password = "tr-pass-9f4e1c";
    for (id, isolation) in [(&schema, Isolation::Schema), (&table, Isolation::Table), (&database, Isolation::Database)]
    {
        let db = (isolation == Isolation::Database).then(|| pg.new_database(password));
        // Not migrated: the fleet run below does it, one step per tenant.
        let new = NewTenant::new(id.clone(), "T", isolation).expect("new").database(db);
        tenancy.create_tenant(new, &()).await.expect("create");
    }
    let report =
        migrate_all(&tenancy, &example_app::migrators(), &FleetOptions::default(), &|_| {}).await.expect("fleet run");
    assert!(report.unfinished.is_empty(), "{report:?}");
    let migrated: usize = report.servers.values().map(|counts| counts.migrated).sum();
    assert_eq!(migrated, 3, "{report:?}");

    // Statements through each handle: a query with a bound value, a raw statement, and a
    // statement inside a transaction of the handle.
    let needle = "needle-5c1d-bound-value";
    for id in [&schema, &table, &database] {
        let handle = tenancy.tenant(id.as_str()).await.expect("handle");
        let found = project::Entity::find().filter(project::Column::Name.eq(needle)).all(&handle).await.expect("query");
        assert!(found.is_empty());
        let sql = Statement::from_sql_and_values(DbBackend::Postgres, "SELECT $1::text", [needle.into()]);
        handle.query_one_raw(sql).await.expect("raw");
        let txn = handle.begin().await.expect("begin");
        txn.execute_unprepared("SELECT 1").await.expect("in the transaction");
        txn.commit().await.expect("commit");
    }
    tenancy.suspend_tenant(schema.as_str(), Some("tr-reason".to_owned())).await.expect("suspend");
    tenancy.resume_tenant(schema.as_str()).await.expect("resume");

    let modes = [(&schema, "schema"), (&table, "table"), (&database, "database")];
    let statements = tagged(&capture, "tenant_statement", "kind");
    for (id, isolation) in modes {
        for kind in ["query_all", "query_one", "begin", "unprepared"] {
            let want = (id.clone(), isolation.to_owned(), kind.to_owned());
            assert!(statements.contains(&want), "no {want:?} in {statements:?}");
        }
    }
    let handles = tagged(&capture, "tenant_handle", "tenant");
    for (id, isolation) in modes {
        assert!(handles.contains(&(id.clone(), isolation.to_owned(), id.clone())), "{handles:?}");
    }
    let operations = tagged(&capture, "tenant_operation", "op");
    for want in [
        (schema.clone(), "schema".to_owned(), "create".to_owned()),
        (table.clone(), "table".to_owned(), "create".to_owned()),
        (database.clone(), "database".to_owned(), "create".to_owned()),
        (schema.clone(), "schema".to_owned(), "suspend".to_owned()),
        (schema.clone(), "schema".to_owned(), "resume".to_owned()),
    ] {
        assert!(operations.contains(&want), "no {want:?} in {operations:?}");
    }
    let steps = tagged(&capture, "fleet_step", "server");
    for (id, isolation) in [(&schema, "schema"), (&database, "database")] {
        assert!(steps.iter().any(|(t, i, _)| t == id && i == isolation), "no fleet step of {id}: {steps:?}");
    }

    // No field of any span holds a bound value, a password or the suspension's reason.
    for span in capture.all() {
        for (name, value) in &span.fields {
            for secret in [needle, password, "tr-reason"] {
                assert!(!value.contains(secret), "{}.{name} = {value}", span.name);
            }
        }
    }
}
