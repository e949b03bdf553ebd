//! Custom domains against real PostgreSQL and SQLite masters: one owner per domain (also
//! when claims race), one primary per tenant, removed with the tenant and carried by a
//! rename, followed by another process's live registry from memory, and out of a tenant's
//! reach from its own SQL.

use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, DbBackend, Statement};
use tenancy::deletion::DeleteOptions;
use tenancy::renaming::RenameOptions;
use tenancy::{Domain, DomainAdded, Error, Isolation, NewTenant, Tenancy, TenantId};
use tenancy_test_support::{PgMaster, TempDir, count, unique_name};

fn domain(name: &str) -> Domain {
    name.parse().expect("a valid domain")
}

async fn schema_tenant(tenancy: &Tenancy, prefix: &str) -> TenantId {
    let id: TenantId = unique_name(prefix).parse().expect("id");
    let new = NewTenant::new(id.clone(), prefix, Isolation::Schema).expect("new tenant");
    tenancy.create_tenant(new, &()).await.expect("create");
    id
}

async fn cache_tenant(tenancy: &Tenancy, prefix: &str) -> TenantId {
    let id: TenantId = unique_name(prefix).parse().expect("id");
    let new = NewTenant::new(id.clone(), prefix, Isolation::Cache).expect("new tenant");
    tenancy.create_tenant(new, &()).await.expect("create");
    id
}

/// `(domain, primary)` of a tenant, as the table holds them (primary first).
async fn listed(tenancy: &Tenancy, id: &TenantId) -> Vec<(String, bool)> {
    tenancy
        .domains(Some(id))
        .await
        .expect("list domains")
        .into_iter()
        .map(|d| {
            assert_eq!(&d.tenant, id);
            (d.domain.to_string(), d.primary)
        })
        .collect()
}

/// The rules of the table, on either backend: owners, primaries, idempotency, errors.
async fn rules(tenancy: &Tenancy, a: &TenantId, b: &TenantId) {
    let shop = domain("Shop.Example.TEST.");
    assert_eq!(shop.as_str(), "shop.example.test");
    assert_eq!(tenancy.add_domain(a, &shop, false).await.expect("add"), DomainAdded::Added);
    assert_eq!(listed(tenancy, a).await, [("shop.example.test".to_owned(), true)], "the first domain is primary");
    // Again: nothing changes.
    assert_eq!(
        tenancy.add_domain(a, &domain("shop.example.test"), false).await.expect("again"),
        DomainAdded::AlreadyThere
    );
    assert_eq!(listed(tenancy, a).await, [("shop.example.test".to_owned(), true)]);

    assert_eq!(tenancy.add_domain(a, &domain("www.example.test"), false).await.expect("add"), DomainAdded::Added);
    assert_eq!(
        listed(tenancy, a).await,
        [("shop.example.test".to_owned(), true), ("www.example.test".to_owned(), false)]
    );
    // --primary moves the mark.
    assert_eq!(
        tenancy.add_domain(a, &domain("www.example.test"), true).await.expect("primary"),
        DomainAdded::AlreadyThere
    );
    assert_eq!(
        listed(tenancy, a).await,
        [("www.example.test".to_owned(), true), ("shop.example.test".to_owned(), false)]
    );

    // One owner per domain.
    match tenancy.add_domain(b, &domain("SHOP.example.test"), true).await {
        Err(Error::DomainTaken { domain, owner }) => {
            assert_eq!((domain.as_str(), owner.as_str()), ("shop.example.test", a.as_str()));
        }
        other => panic!("a second claim: {other:?}"),
    }
    assert!(listed(tenancy, b).await.is_empty(), "nothing was added to b");
    assert_eq!(tenancy.domain_owner(&shop).await.expect("owner"), Some(a.clone()));

    // Unknown tenant, unknown domain.
    let nobody: TenantId = unique_name("nobody").parse().expect("id");
    assert!(matches!(
        tenancy.add_domain(&nobody, &domain("x.example.test"), false).await,
        Err(Error::TenantNotFound { .. })
    ));
    assert!(matches!(tenancy.remove_domain(&domain("x.example.test")).await, Err(Error::DomainNotFound { .. })));
    assert_eq!(tenancy.domain_owner(&domain("x.example.test")).await.expect("owner"), None);

    // Removing the primary hands the mark to the oldest remaining domain.
    let removed = tenancy.remove_domain(&domain("www.example.test")).await.expect("remove");
    assert_eq!((removed.tenant.as_str(), removed.primary), (a.as_str(), true));
    assert_eq!(listed(tenancy, a).await, [("shop.example.test".to_owned(), true)]);
}

/// A domain's owner as another process sees it, polled for up to a second.
async fn owner_within_a_second(tenancy: &Tenancy, name: &str, want: Option<&TenantId>) {
    let started = Instant::now();
    loop {
        let owner = tenancy.domain_owner(&domain(name)).await.expect("owner");
        if owner.as_ref() == want {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(1), "{name}: still {owner:?}, want {want:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn postgres_domains_have_one_owner_one_primary_and_leave_with_their_tenant() {
    let Some(pg) = PgMaster::create().await else { return };
    let dir = TempDir::new();
    let tenancy = pg.tenancy(&dir).await;
    let (a, b) = (schema_tenant(&tenancy, "dom_a").await, schema_tenant(&tenancy, "dom_b").await);
    rules(&tenancy, &a, &b).await;

    // Another process's view: its live registry follows the table's changes.
    let other = pg.tenancy(&dir).await;
    other.tenant(&a).await.expect("starts the live registry");
    let started = Instant::now();
    while !other.registry_is_live() {
        assert!(started.elapsed() < Duration::from_secs(5), "the live registry did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    owner_within_a_second(&other, "shop.example.test", Some(&a)).await;
    tenancy.add_domain(&b, &domain("b.example.test"), false).await.expect("add");
    owner_within_a_second(&other, "b.example.test", Some(&b)).await;

    // Served from memory: a row written with the announcement switched off is not seen
    // while the snapshot is live (a per-lookup query would see it at once).
    let master = pg.connect().await;
    master
        .execute_unprepared(
            "BEGIN; ALTER TABLE tenancy_domains DISABLE TRIGGER tenancy_domains_announce; \
             INSERT INTO tenancy_domains (domain, tenant_id, is_primary, created_at) \
             VALUES ('quiet.example.test', (SELECT tenant_id FROM tenancy_tenants ORDER BY tenant_id LIMIT 1), false, now()); \
             ALTER TABLE tenancy_domains ENABLE TRIGGER tenancy_domains_announce; COMMIT",
        )
        .await
        .expect("write unannounced");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(other.registry_is_live());
    assert_eq!(other.domain_owner(&domain("quiet.example.test")).await.expect("owner"), None, "answered from memory");
    master.execute_unprepared("DELETE FROM tenancy_domains WHERE domain = 'quiet.example.test'").await.expect("clean");

    // A rename carries the domains; a deletion removes them, in every process.
    let renamed: TenantId = unique_name("dom_r").parse().expect("id");
    tenancy.rename_tenant(&b, &renamed, &RenameOptions::default()).await.expect("rename");
    assert_eq!(listed(&tenancy, &renamed).await, [("b.example.test".to_owned(), true)]);
    owner_within_a_second(&other, "b.example.test", Some(&renamed)).await;
    tenancy.delete_tenant(&renamed, &DeleteOptions::default()).await.expect("delete");
    let left =
        count(&master, "SELECT count(*) FROM tenancy_domains WHERE domain = $1", vec!["b.example.test".into()]).await;
    assert_eq!(left, 0, "the domain left with its tenant");
    owner_within_a_second(&other, "b.example.test", None).await;
    assert_eq!(tenancy.domain_owner(&domain("b.example.test")).await.expect("owner"), None);
}

/// Eight tenants claim one domain at the same moment, from as many connections: exactly
/// one gets it, the others are told who has it; repeated.
#[tokio::test]
async fn postgres_racing_claims_of_one_domain_have_one_winner() {
    let Some(pg) = PgMaster::create().await else { return };
    let dir = TempDir::new();
    let tenancy = pg.tenancy(&dir).await;
    let mut tenants = Vec::new();
    for n in 0..8 {
        tenants.push(cache_tenant(&tenancy, &format!("race{n}")).await);
    }
    for round in 0..10 {
        let contested = domain(&format!("round{round}.race.test"));
        let claims = tenants.iter().map(|id| {
            let (tenancy, contested) = (tenancy.clone(), contested.clone());
            async move { tenancy.add_domain(id, &contested, false).await }
        });
        let results = futures_util::future::join_all(claims).await;
        let winners: Vec<&TenantId> = tenants
            .iter()
            .zip(&results)
            .filter_map(|(id, result)| matches!(result, Ok(DomainAdded::Added)).then_some(id))
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        for result in &results {
            match result {
                Ok(DomainAdded::Added) => {}
                Err(Error::DomainTaken { owner, .. }) => assert_eq!(owner, winners[0].as_str()),
                other => panic!("round {round}: {other:?}"),
            }
        }
        let owners = tenancy.domains(None).await.expect("list");
        let holding: Vec<_> = owners.iter().filter(|d| d.domain == contested).collect();
        assert_eq!(holding.len(), 1);
        assert_eq!(&holding[0].tenant, winners[0]);
    }
}

/// A tenant's own SQL cannot read or write the domains table: schema tenants through
/// their login role, table tenants through the application role.
#[tokio::test]
async fn postgres_tenants_cannot_reach_the_domains_table() {
    let Some(pg) = PgMaster::create().await else { return };
    let dir = TempDir::new();
    let tenancy = pg.tenancy(&dir).await;
    let a = schema_tenant(&tenancy, "dom_sa").await;
    tenancy.add_domain(&a, &domain("secret.example.test"), false).await.expect("add");
    let table = tenancy_test_support::table_tenants(&tenancy, &(), false, &["dom_ta"]).await;
    let schema = tenancy.tenant(&a).await.expect("handle");
    for (what, handle) in [("schema", &schema), ("table", &table[0])] {
        for sql in [
            "SELECT domain FROM public.tenancy_domains",
            "SELECT domain FROM tenancy_domains",
            "INSERT INTO public.tenancy_domains (domain, tenant_id, is_primary, created_at) \
             VALUES ('evil.example.test', 'x', false, now())",
            "UPDATE public.tenancy_domains SET tenant_id = tenant_id",
            "DO $$ BEGIN PERFORM count(*) FROM public.tenancy_domains; END $$",
        ] {
            let result = handle.execute_raw(Statement::from_string(DbBackend::Postgres, sql)).await;
            let err = result.expect_err(&format!("{what}: {sql}"));
            let text = err.to_string();
            assert!(text.contains("permission denied") || text.contains("does not exist"), "{what}: {sql}: {text}");
        }
    }
    assert_eq!(
        tenancy.domains(None).await.expect("list").into_iter().map(|d| d.domain.to_string()).collect::<Vec<_>>(),
        ["secret.example.test"]
    );
}

#[tokio::test]
async fn sqlite_domains_follow_the_same_rules_and_leave_with_their_tenant() {
    let dir = TempDir::new();
    let tenancy = dir.sqlite_builder().connect().await.expect("connect");
    let (a, b) = (cache_tenant(&tenancy, "dom_a").await, cache_tenant(&tenancy, "dom_b").await);
    rules(&tenancy, &a, &b).await;

    // Another process on the same file follows through the generation counter.
    let other = dir.sqlite_builder().connect().await.expect("connect again");
    other.tenant(&a).await.expect("starts the live registry");
    tenancy.add_domain(&b, &domain("b.example.test"), false).await.expect("add");
    let started = Instant::now();
    loop {
        if other.registry_is_live()
            && other.domain_owner(&domain("b.example.test")).await.expect("owner").as_ref() == Some(&b)
        {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(2), "the other process did not follow");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The foreign key holds on SQLite too: rename carries, delete removes.
    let renamed: TenantId = unique_name("dom_r").parse().expect("id");
    tenancy.rename_tenant(&b, &renamed, &RenameOptions::default()).await.expect("rename");
    assert_eq!(listed(&tenancy, &renamed).await, [("b.example.test".to_owned(), true)]);
    tenancy.delete_tenant(&renamed, &DeleteOptions::default()).await.expect("delete");
    let row = tenancy
        .master()
        .query_one_raw(Statement::from_string(
            DbBackend::Sqlite,
            "SELECT count(*) FROM tenancy_domains WHERE domain = 'b.example.test'",
        ))
        .await
        .expect("count")
        .expect("a row");
    assert_eq!(row.try_get_by_index::<i64>(0).expect("count"), 0);
    assert_eq!(tenancy.domain_owner(&domain("b.example.test")).await.expect("owner"), None);
}
