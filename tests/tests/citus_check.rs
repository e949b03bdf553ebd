//! `Tenancy::diagnose_citus` against the real PostgreSQL server (without Citus): planted
//! models and tables that break Citus's rules are each flagged with their table and rule,
//! a model whose table is missing is checked by what it declares, a schema tenant's schema
//! is checked for what schema-based sharding refuses, and a clean planted schema gives no
//! finding.
//!
//! This binary also links the example app's and other tests' models, whose tables these
//! masters lack (so they are checked by their declared keys): each test looks at the
//! findings about its own tables only.

use sea_orm::ConnectionTrait;
use tenancy::doctor::{CitusRule, Finding};
use tenancy::{Isolation, NewTenant, Tenancy};
use tenancy_test_support::{PgMaster, TempDir, column_strings, unique_name};

/// The planted models: registered like an application's, their tables made by each test.
#[allow(dead_code, reason = "the models are only registered for the check, never read or written")]
mod planted {
    /// Table-scoped, primary key `id` alone (the violation), referencing a shared table.
    pub(super) mod order {
        use sea_orm::entity::prelude::*;

        #[tenancy::tenant_scoped]
        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "citus_orders")]
        pub(crate) struct Model {
            #[sea_orm(primary_key)]
            pub id: i64,
            pub tenant_id: String,
            pub country_code: String,
            pub reference: String,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub(crate) enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }

    /// Shared by every tenant: a reference table on Citus.
    pub(super) mod country {
        use sea_orm::entity::prelude::*;

        #[tenancy::shared]
        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "citus_countries")]
        pub(crate) struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub code: String,
            pub name: String,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub(crate) enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }

    /// Table-scoped with `(tenant_id, id)` as its key, as Citus wants it.
    pub(super) mod invoice {
        use sea_orm::entity::prelude::*;

        #[tenancy::tenant_scoped]
        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "citus_invoices")]
        pub(crate) struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub tenant_id: String,
            #[sea_orm(primary_key, auto_increment = false)]
            pub id: i64,
            pub number: String,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub(crate) enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }

    /// Table-scoped, a line of an invoice.
    pub(super) mod invoice_line {
        use sea_orm::entity::prelude::*;

        #[tenancy::tenant_scoped]
        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "citus_invoice_lines")]
        pub(crate) struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub tenant_id: String,
            #[sea_orm(primary_key, auto_increment = false)]
            pub id: i64,
            pub invoice_id: i64,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub(crate) enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }

    /// Table-scoped on `org_id`, with a 32-bit key and no table in any master: checked by
    /// what the model declares.
    pub(super) mod draft {
        use sea_orm::entity::prelude::*;

        #[tenancy::tenant_scoped(column = "org_id")]
        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "citus_drafts")]
        pub(crate) struct Model {
            #[sea_orm(primary_key)]
            pub id: i32,
            pub org_id: String,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub(crate) enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }
}

/// `(table, rule, problem, fix)` of the Citus findings about `tables`, in the check's
/// order (by table, then rule).
fn about(findings: &[Finding], tables: &[&str]) -> Vec<(String, CitusRule, String, String)> {
    findings
        .iter()
        .filter_map(|finding| match finding {
            Finding::Citus { table, rule, problem, fix, .. } if tables.contains(&table.as_str()) => {
                Some((table.clone(), *rule, problem.clone(), fix.clone()))
            }
            Finding::Citus { .. } => None,
            other => panic!("diagnose_citus returned a finding of another check: {other:?}"),
        })
        .collect()
}

fn rules(found: &[(String, CitusRule, String, String)]) -> Vec<(&str, CitusRule)> {
    found.iter().map(|(table, rule, ..)| (table.as_str(), *rule)).collect()
}

async fn master() -> Option<(PgMaster, Tenancy, TempDir)> {
    let pg = PgMaster::create().await?;
    let dir = TempDir::new();
    let tenancy = pg.tenancy(&dir).await;
    Some((pg, tenancy, dir))
}

const PLANTED: [&str; 6] =
    ["citus_audit", "citus_orders", "citus_countries", "citus_invoices", "citus_invoice_lines", "citus_drafts"];

#[tokio::test]
async fn a_primary_key_without_the_tenant_column_and_a_referenced_shared_table_are_flagged() {
    let Some((pg, tenancy, _dir)) = master().await else { return };
    let db = pg.connect().await;
    db.execute_unprepared(
        "CREATE TABLE citus_countries (code text PRIMARY KEY, name text NOT NULL); \
         CREATE TABLE citus_orders (id bigserial PRIMARY KEY, tenant_id text NOT NULL, \
           country_code text NOT NULL REFERENCES citus_countries (code), reference text NOT NULL); \
         CREATE UNIQUE INDEX citus_orders_reference ON citus_orders (reference); \
         CREATE TABLE citus_invoices (tenant_id text NOT NULL, id bigint NOT NULL, number text NOT NULL, \
           PRIMARY KEY (tenant_id, id), CONSTRAINT citus_invoices_id_key UNIQUE (id)); \
         CREATE TABLE citus_invoice_lines (tenant_id text NOT NULL, id bigint NOT NULL, \
           invoice_id integer NOT NULL CONSTRAINT citus_lines_invoice REFERENCES citus_invoices (id), \
           PRIMARY KEY (tenant_id, id)); \
         CREATE TABLE citus_audit (id bigserial PRIMARY KEY, \
           order_id bigint CONSTRAINT citus_audit_order REFERENCES citus_orders (id))",
    )
    .await
    .expect("plant the tables");
    // The catalog holds what is planted: the orders' key is `id` alone.
    let key = column_strings(
        &db,
        "SELECT a.attname::text FROM pg_constraint c JOIN pg_attribute a ON a.attrelid = c.conrelid \
         AND a.attnum = ANY (c.conkey) WHERE c.conrelid = 'citus_orders'::regclass AND c.contype = 'p'",
        vec![],
    )
    .await;
    assert_eq!(key, ["id"]);

    let findings = tenancy.diagnose_citus().await.expect("diagnose_citus");
    let found = about(&findings, &PLANTED);
    assert_eq!(
        rules(&found),
        [
            ("citus_audit", CitusRule::ForeignKey),
            ("citus_drafts", CitusRule::PrimaryKey),
            ("citus_drafts", CitusRule::IntegerKey),
            ("citus_invoice_lines", CitusRule::ForeignKey),
            ("citus_invoice_lines", CitusRule::IntegerKey),
            ("citus_invoices", CitusRule::UniqueKey),
            ("citus_orders", CitusRule::PrimaryKey),
            ("citus_orders", CitusRule::UniqueKey),
            ("citus_orders", CitusRule::ReferenceTable),
        ],
        "{found:#?}"
    );
    let text = |table: &str, rule: CitusRule| {
        let (_, _, problem, fix) = found.iter().find(|f| f.0 == table && f.1 == rule).expect("the finding");
        format!("{problem} / {fix}")
    };
    let primary = text("citus_orders", CitusRule::PrimaryKey);
    assert!(
        primary.contains("primary key \"citus_orders_pkey\" (id) does not include the tenant column tenant_id"),
        "{primary}"
    );
    assert!(primary.contains("PRIMARY KEY (tenant_id, id)"), "{primary}");
    // Both tables are named, and the shared table is known as one.
    let reference = text("citus_orders", CitusRule::ReferenceTable);
    assert!(reference.contains("references citus_countries, which is declared #[tenancy::shared]"), "{reference}");
    assert!(reference.contains("create_reference_table('citus_countries')"), "{reference}");
    assert!(reference.contains("before distributing citus_orders"), "{reference}");
    let unique = text("citus_orders", CitusRule::UniqueKey);
    assert!(unique.contains("unique index \"citus_orders_reference\" (reference)"), "{unique}");
    let unique = text("citus_invoices", CitusRule::UniqueKey);
    assert!(unique.contains("unique constraint \"citus_invoices_id_key\" (id)"), "{unique}");
    let foreign = text("citus_invoice_lines", CitusRule::ForeignKey);
    assert!(
        foreign.contains("foreign key \"citus_lines_invoice\" (invoice_id) references citus_invoices (id)"),
        "{foreign}"
    );
    assert!(
        foreign.contains("FOREIGN KEY (tenant_id, invoice_id) REFERENCES citus_invoices (tenant_id, id)"),
        "{foreign}"
    );
    let integer = text("citus_invoice_lines", CitusRule::IntegerKey);
    assert!(integer.contains("column invoice_id is integer and in a foreign key"), "{integer}");
    // A table no model declares, referencing a scoped one.
    let audit = text("citus_audit", CitusRule::ForeignKey);
    assert!(
        audit.contains("foreign key \"citus_audit_order\" (order_id) references the tenant-scoped table citus_orders"),
        "{audit}"
    );
    // No table: the model's own key, on its own tenant column.
    let drafts = text("citus_drafts", CitusRule::PrimaryKey);
    assert!(drafts.contains("primary key (id) declared by the model"), "{drafts}");
    assert!(drafts.contains("does not include the tenant column org_id"), "{drafts}");
    assert!(text("citus_drafts", CitusRule::IntegerKey).contains("primary key column id"));

    // Every finding is one of this check's, and none is a repair's business.
    assert!(findings.iter().all(|f| f.kind().starts_with("citus_") && !f.repairable()));
}

#[tokio::test]
async fn a_clean_planted_schema_gives_no_finding() {
    let Some((pg, tenancy, _dir)) = master().await else { return };
    let db = pg.connect().await;
    db.execute_unprepared(
        "CREATE TABLE citus_invoices (tenant_id text NOT NULL, id bigserial NOT NULL, number text NOT NULL, \
           PRIMARY KEY (tenant_id, id), UNIQUE (tenant_id, number)); \
         CREATE TABLE citus_invoice_lines (tenant_id text NOT NULL, id bigserial NOT NULL, invoice_id bigint NOT NULL, \
           quantity integer NOT NULL, PRIMARY KEY (tenant_id, id), \
           FOREIGN KEY (tenant_id, invoice_id) REFERENCES citus_invoices (tenant_id, id) ON DELETE CASCADE); \
         CREATE INDEX ON citus_invoice_lines (tenant_id, invoice_id)",
    )
    .await
    .expect("plant the tables");
    let findings = tenancy.diagnose_citus().await.expect("diagnose_citus");
    let found = about(&findings, &["citus_invoices", "citus_invoice_lines"]);
    assert!(found.is_empty(), "{found:#?}");
    // The same tables with one 32-bit key are not clean: the check reads these tables.
    db.execute_unprepared("ALTER TABLE citus_invoice_lines ALTER COLUMN invoice_id TYPE integer")
        .await
        .expect("narrow the key");
    let findings = tenancy.diagnose_citus().await.expect("diagnose_citus");
    let found = about(&findings, &["citus_invoices", "citus_invoice_lines"]);
    assert_eq!(rules(&found), [("citus_invoice_lines", CitusRule::IntegerKey)], "{found:#?}");
}

#[tokio::test]
async fn a_schema_tenants_tables_are_checked_for_what_schema_sharding_refuses() {
    let Some((pg, tenancy, _dir)) = master().await else { return };
    let id = unique_name("citus_s");
    let new = NewTenant::new(id.as_str(), id.as_str(), Isolation::Schema).expect("new tenant");
    tenancy.create_tenant(new, &()).await.expect("create the schema tenant");
    let db = pg.connect().await;
    db.execute_unprepared(&format!(
        "CREATE TABLE citus_countries (code text PRIMARY KEY); \
         CREATE TABLE \"{id}\".notes (id bigint PRIMARY KEY, country text REFERENCES public.citus_countries (code)); \
         CREATE TABLE \"{id}\".old_notes () INHERITS (\"{id}\".notes); \
         CREATE TABLE \"{id}\".tags (id bigint PRIMARY KEY, note_id bigint REFERENCES \"{id}\".notes (id))"
    ))
    .await
    .expect("plant the tables");

    let findings = tenancy.diagnose_citus().await.expect("diagnose_citus");
    let (notes, old_notes) = (format!("{id}.notes"), format!("{id}.old_notes"));
    let found = about(&findings, &[notes.as_str(), old_notes.as_str(), &format!("{id}.tags")]);
    assert_eq!(
        rules(&found),
        [(notes.as_str(), CitusRule::SchemaSharding), (old_notes.as_str(), CitusRule::SchemaSharding)],
        "{found:#?}"
    );
    assert!(found[0].2.contains("references public.citus_countries, outside the schema"), "{found:#?}");
    assert!(found[0].3.contains("create_reference_table('public.citus_countries')"), "{found:#?}");
    assert!(found[1].2.contains(&format!("inherits from {id}.notes")), "{found:#?}");
    let tenants: Vec<Option<&str>> =
        findings.iter().filter(|f| f.subject().contains(&format!("{id}."))).map(Finding::tenant).collect();
    assert_eq!(tenants, [Some(id.as_str()), Some(id.as_str())]);
}

/// A schema tenant in a shard database on another server is checked there: its planted
/// inheritance is flagged, and named with its tenant (the master has no such schema).
#[tokio::test]
async fn a_shard_tenants_tables_are_checked_in_its_shard_database() {
    let Some(server) = tenancy_test_support::PgServer::start() else { return };
    let Some((pg, tenancy, _dir)) = master().await else { return };
    let new = tenancy::servers::NewServer::new("citus2", "127.0.0.1", server.port, "postgres").expect("valid");
    tenancy.add_server(new).await.expect("add the server");
    let id = unique_name("citus_shard");
    let new = NewTenant::new(id.as_str(), id.as_str(), Isolation::Schema)
        .expect("new tenant")
        .on_server("citus2".parse().expect("a valid name"));
    tenancy.create_tenant(new, &()).await.expect("create the shard tenant");
    let shard = sea_orm::Database::connect(server.url(&tenancy::ShardDatabase::name_for(&pg.name)))
        .await
        .expect("connect to the shard");
    shard
        .execute_unprepared(&format!(
            "CREATE TABLE \"{id}\".notes (id bigint PRIMARY KEY); \
             CREATE TABLE \"{id}\".old_notes () INHERITS (\"{id}\".notes)"
        ))
        .await
        .expect("plant the tables");
    shard.close().await.expect("close");

    let findings = tenancy.diagnose_citus().await.expect("diagnose_citus");
    let (notes, old_notes) = (format!("{id}.notes"), format!("{id}.old_notes"));
    let found = about(&findings, &[notes.as_str(), old_notes.as_str()]);
    assert_eq!(rules(&found), [(old_notes.as_str(), CitusRule::SchemaSharding)], "{found:#?}");
    assert!(found[0].2.contains(&format!("inherits from {notes}")), "{found:#?}");
    let tenants: Vec<Option<&str>> =
        findings.iter().filter(|f| f.subject().contains(&format!("{id}."))).map(Finding::tenant).collect();
    assert_eq!(tenants, [Some(id.as_str())]);
}
