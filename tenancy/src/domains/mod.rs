//! Custom domains: the domains customers bring (`shop.acme.com`), recorded in the master
//! database's `tenancy_domains` table and resolved to their tenant by
//! `TenantResolver::Domain` (feature `tower`).
//!
//! - **One owner per domain.** The domain is the table's primary key: claiming a domain
//!   another tenant has is [`Error::DomainTaken`], naming the owner. Adding a domain the
//!   tenant already has changes nothing (so a killed `adddomain` is finished by running it
//!   again), except that `primary` makes it the primary one.
//! - **One primary domain per tenant** (the one to build links with): a tenant's first
//!   domain is its primary, [`Tenancy::add_domain`] with `primary` moves the mark, and
//!   removing the primary one hands it to the oldest remaining domain. A partial unique
//!   index keeps it to one.
//! - **Removed with the tenant**: the table's foreign key to the registry cascades, so
//!   `deletetenant` removes them with the registry row, and `renametenant` carries them to
//!   the new id.
//! - **Normalised once**: [`Domain`] parses what an operator types (case, trailing dot,
//!   international names to punycode), so a lookup compares plain strings.
//!
//! A change of the table is announced like a registry change (the tenant's id on the
//! registry channel, or the SQLite generation counter), so the live registry of every
//! running process holds the domains in memory and a request's host costs no query.

mod name;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue, ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait, QueryFilter, QueryOrder,
    Statement, TransactionTrait,
};

pub use self::name::Domain;
use crate::connection::pooler::MasterAccess;
use crate::registry::{REGISTRY_TABLE, entity as registry};
use crate::{Error, Result, Tenancy, TenantId};

/// The master database's table of custom domains (**contract**): `domain` (primary key,
/// normalised), `tenant_id` (foreign key to the registry, cascading), `is_primary`,
/// `created_at`.
pub const DOMAINS_TABLE: &str = "tenancy_domains";

/// A domain of a tenant, as the domains table records it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TenantDomain {
    /// The domain.
    pub domain: Domain,
    /// The tenant it leads to.
    pub tenant: TenantId,
    /// Whether it is the tenant's primary domain.
    pub primary: bool,
    /// When it was added.
    pub created_at: DateTime<Utc>,
}

impl TenantDomain {
    fn from_row(row: entity::Model) -> Result<TenantDomain> {
        Ok(TenantDomain {
            domain: Domain::from_stored(row.domain),
            tenant: TenantId::new(row.tenant_id)?,
            primary: row.is_primary,
            created_at: row.created_at,
        })
    }
}

/// What [`Tenancy::add_domain`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DomainAdded {
    /// The domain is new.
    Added,
    /// The tenant had it already (its primary mark may have moved to it).
    AlreadyThere,
}

impl Tenancy {
    /// Gives tenant `id` the domain `domain`; `primary` makes it the tenant's primary
    /// domain (a tenant's first domain is primary anyway). Adding a domain the tenant has
    /// is no error ([`DomainAdded::AlreadyThere`]).
    ///
    /// ```no_run
    /// # async fn demo(tenancy: tenancy::Tenancy) -> tenancy::Result<()> {
    /// tenancy.add_domain("acme", &"shop.acme.com".parse()?, true).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::TenantNotFound`]; [`Error::DomainTaken`] when another tenant has it;
    /// [`Error::Database`].
    pub async fn add_domain<I>(&self, id: I, domain: &Domain, primary: bool) -> Result<DomainAdded>
    where
        I: TryInto<TenantId>,
        Error: From<I::Error>,
    {
        let id = id.try_into()?;
        let txn = self.master().begin().await?;
        let added = add_in(&txn, &id, domain, primary).await;
        let added = match added {
            Ok(added) => {
                txn.commit().await?;
                added
            }
            Err(err) => {
                let _ = txn.rollback().await;
                return Err(match err {
                    Error::Database(db) => taken_or_db(self, domain, &id, db).await,
                    other => other,
                });
            }
        };
        self.domains_changed(&id).await;
        Ok(added)
    }

    /// Takes `domain` away from its tenant; returns what it was. Removing a tenant's
    /// primary domain makes its oldest remaining domain the primary one.
    ///
    /// # Errors
    /// [`Error::DomainNotFound`] when no tenant has it; [`Error::Database`].
    pub async fn remove_domain(&self, domain: &Domain) -> Result<TenantDomain> {
        let txn = self.master().begin().await?;
        let removed = remove_in(&txn, domain).await;
        match removed {
            Ok(removed) => {
                txn.commit().await?;
                self.domains_changed(&removed.tenant).await;
                Ok(removed)
            }
            Err(err) => {
                let _ = txn.rollback().await;
                Err(err)
            }
        }
    }

    /// The domains of tenant `id` (primary first, then by name), or of every tenant
    /// (`None`, ordered by tenant), read from the master database.
    ///
    /// # Errors
    /// [`Error::Database`].
    pub async fn domains(&self, id: Option<&TenantId>) -> Result<Vec<TenantDomain>> {
        let mut query = entity::Entity::find();
        if let Some(id) = id {
            query = query.filter(entity::Column::TenantId.eq(id.as_str()));
        }
        let rows = query
            .order_by_asc(entity::Column::TenantId)
            .order_by_desc(entity::Column::IsPrimary)
            .order_by_asc(entity::Column::Domain)
            .all(self.master())
            .await?;
        rows.into_iter().map(TenantDomain::from_row).collect()
    }

    /// The tenant `domain` leads to, if any: from the live registry when it is live (no
    /// query), from the domains table otherwise.
    ///
    /// # Errors
    /// [`Error::Database`] when the table cannot be read.
    pub async fn domain_owner(&self, domain: &Domain) -> Result<Option<TenantId>> {
        if let Ok(owner) = self.live_domain_owner(domain) {
            return Ok(owner);
        }
        let registry = self.registry_reader();
        let access = MasterAccess::open(&registry.pool, registry.pooler).await?;
        let owner = read_owner(&access, domain).await?;
        access.finish().await?;
        Ok(owner)
    }
}

/// The owner of `domain` in the domains table, read through `db`.
pub(crate) async fn read_owner<C: ConnectionTrait>(db: &C, domain: &Domain) -> Result<Option<TenantId>> {
    let row = entity::Entity::find_by_id(domain.as_str()).one(db).await?;
    row.map(|row| TenantId::new(row.tenant_id)).transpose()
}

/// Every domain of the tenants `ids` (all tenants when `None`), as `(domain, tenant)`.
pub(crate) async fn read_all<C: ConnectionTrait>(
    db: &C,
    ids: Option<&[&str]>,
) -> Result<Vec<(Domain, TenantId)>, sea_orm::DbErr> {
    let mut query = entity::Entity::find();
    if let Some(ids) = ids {
        query = query.filter(entity::Column::TenantId.is_in(ids.iter().copied()));
    }
    let rows = query.all(db).await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| Some((Domain::from_stored(row.domain), TenantId::new(row.tenant_id).ok()?)))
        .collect())
}

async fn add_in(txn: &DatabaseTransaction, id: &TenantId, domain: &Domain, primary: bool) -> Result<DomainAdded> {
    // The tenant's row, locked on PostgreSQL so two changes of its primary domain take
    // turns (SQLite's writers take turns anyway).
    let exists = match txn.get_database_backend() {
        DbBackend::Postgres => txn
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                format!("SELECT 1 FROM {REGISTRY_TABLE} WHERE tenant_id = $1 FOR UPDATE"),
                [id.as_str().into()],
            ))
            .await?
            .is_some(),
        _ => registry::Entity::find_by_id(id.as_str()).one(txn).await?.is_some(),
    };
    if !exists {
        return Err(Error::TenantNotFound { id: id.to_string() });
    }
    let existing = entity::Entity::find_by_id(domain.as_str()).one(txn).await?;
    if let Some(existing) = &existing
        && existing.tenant_id != id.as_str()
    {
        return Err(Error::DomainTaken { domain: domain.to_string(), owner: existing.tenant_id.clone() });
    }
    let has_primary = entity::Entity::find()
        .filter(entity::Column::TenantId.eq(id.as_str()))
        .filter(entity::Column::IsPrimary.eq(true))
        .one(txn)
        .await?
        .is_some();
    let make_primary = primary || !has_primary;
    if make_primary && existing.as_ref().is_some_and(|row| row.is_primary) {
        return Ok(DomainAdded::AlreadyThere);
    }
    if make_primary && has_primary {
        entity::Entity::update_many()
            .col_expr(entity::Column::IsPrimary, Expr::value(false))
            .filter(entity::Column::TenantId.eq(id.as_str()))
            .filter(entity::Column::IsPrimary.eq(true))
            .exec(txn)
            .await?;
    }
    match existing {
        Some(_) if make_primary => {
            entity::Entity::update_many()
                .col_expr(entity::Column::IsPrimary, Expr::value(true))
                .filter(entity::Column::Domain.eq(domain.as_str()))
                .exec(txn)
                .await?;
            Ok(DomainAdded::AlreadyThere)
        }
        Some(_) => Ok(DomainAdded::AlreadyThere),
        None => {
            let row = entity::ActiveModel {
                domain: ActiveValue::Set(domain.to_string()),
                tenant_id: ActiveValue::Set(id.to_string()),
                is_primary: ActiveValue::Set(make_primary),
                created_at: ActiveValue::Set(Utc::now()),
            };
            entity::Entity::insert(row).exec_without_returning(txn).await?;
            Ok(DomainAdded::Added)
        }
    }
}

async fn remove_in(txn: &DatabaseTransaction, domain: &Domain) -> Result<TenantDomain> {
    let row = entity::Entity::find_by_id(domain.as_str())
        .one(txn)
        .await?
        .ok_or_else(|| Error::DomainNotFound { domain: domain.to_string() })?;
    let removed = TenantDomain::from_row(row.clone())?;
    entity::Entity::delete_many().filter(entity::Column::Domain.eq(domain.as_str())).exec(txn).await?;
    if removed.primary {
        let oldest = entity::Entity::find()
            .filter(entity::Column::TenantId.eq(removed.tenant.as_str()))
            .order_by_asc(entity::Column::CreatedAt)
            .order_by_asc(entity::Column::Domain)
            .one(txn)
            .await?;
        if let Some(oldest) = oldest {
            entity::Entity::update_many()
                .col_expr(entity::Column::IsPrimary, Expr::value(true))
                .filter(entity::Column::Domain.eq(oldest.domain))
                .exec(txn)
                .await?;
        }
    }
    Ok(removed)
}

/// A statement of an addition failed: when another tenant's claim of the domain won a
/// race (the primary key), that is [`Error::DomainTaken`]; anything else stays itself.
async fn taken_or_db(tenancy: &Tenancy, domain: &Domain, id: &TenantId, err: sea_orm::DbErr) -> Error {
    if !matches!(err.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_))) {
        return Error::Database(err);
    }
    match read_owner(tenancy.master(), domain).await {
        Ok(Some(owner)) if owner != *id => Error::DomainTaken { domain: domain.to_string(), owner: owner.to_string() },
        _ => Error::Database(err),
    }
}

pub(crate) mod entity {
    //! The sea-orm entity of `tenancy_domains`.
    #![allow(unreachable_pub, reason = "derive macros generate `pub` items in this private module")]
    #![allow(missing_docs, reason = "private entity; the columns are documented on `TenantDomain`")]

    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "tenancy_domains")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub domain: String,
        pub tenant_id: String,
        pub is_primary: bool,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
