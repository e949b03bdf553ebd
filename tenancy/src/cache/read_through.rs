//! The read-through helper of `#[tenant_scoped(cache)]` models.

use std::marker::PhantomData;
use std::time::Duration;

use sea_orm::sea_query::{IntoValueTuple, ValueTuple, sea_value_to_json_value};
use sea_orm::{
    ActiveModelBehavior, ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, Iterable, ModelTrait,
    PrimaryKeyToColumn, PrimaryKeyTrait, QueryFilter,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{TenantCache, TenantKey};
use crate::{Error, Result, Scope, TenantConnection, TenantScoped};

/// The primary-key type of entity `E`.
type PrimaryKeyOf<E> = <<E as EntityTrait>::PrimaryKey as PrimaryKeyTrait>::ValueType;

/// Reads a `#[tenant_scoped(cache)]` model by primary key from the tenant's cache, falling
/// back to the tenant's database; writes through it invalidate the cached entry.
///
/// From [`TenantConnection::read_through`]. Entries live under the model's table name in
/// the tenant's namespace, keyed by the primary key (as JSON: `7`, `"abc"`, `[1,"x"]`),
/// for the model's `ttl`. The model must be `Serialize + Deserialize`.
///
/// ```no_run
/// mod session {
///     use sea_orm::entity::prelude::*;
///
///     #[tenancy::tenant_scoped(cache, ttl = 1800)]
///     #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
///     #[sea_orm(table_name = "login_sessions")]
///     pub struct Model {
///         #[sea_orm(primary_key, auto_increment = false)]
///         pub token: String,
///         pub user_id: i32,
///     }
///
///     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
///     pub enum Relation {}
///
///     impl ActiveModelBehavior for ActiveModel {}
/// }
///
/// # async fn demo(acme: tenancy::TenantConnection) -> tenancy::Result<()> {
/// let sessions = acme.read_through::<session::Entity>()?;
/// let first = sessions.find_by_id("tok-1").await?; // database, then cached for 30 minutes
/// let again = sessions.find_by_id("tok-1").await?; // cache
/// sessions.delete_by_id("tok-1").await?; // database, and the entry is dropped
/// # Ok(()) }
/// ```
///
/// Misses are not cached: a missing row is looked up again next time. Invalidation runs
/// after the database write succeeded; if the cache is unreachable at that moment the
/// call returns [`Error::CacheUnavailable`] although the write happened, and the stale
/// entry lives until its TTL. As with any cache-aside scheme, a read that loads a row
/// just before a concurrent write and stores it just after that write's invalidation
/// keeps the older row until the TTL: give models whose staleness matters a short TTL.
pub struct ReadThrough<E> {
    db: TenantConnection,
    cache: TenantCache,
    ttl: Option<Duration>,
    entity: PhantomData<fn() -> E>,
}

impl<E> std::fmt::Debug for ReadThrough<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadThrough")
            .field("entity", &std::any::type_name::<E>())
            .field("tenant", self.cache.tenant())
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl<E> Clone for ReadThrough<E> {
    fn clone(&self) -> Self {
        Self { db: self.db.clone(), cache: self.cache.clone(), ttl: self.ttl, entity: PhantomData }
    }
}

impl TenantConnection {
    /// The read-through helper of the cache-scoped model `E` for this tenant: its cache
    /// namespace and its database, the two always of the same tenant.
    ///
    /// For a table-isolated tenant the model's table is one table shared by every table
    /// tenant: the model must name its tenant column
    /// (`#[tenant_scoped(cache, column = "tenant_id")]`), which the row-level security
    /// (PostgreSQL) or the statement scoping (SQLite) of table isolation then applies to.
    ///
    /// # Errors
    /// - [`Error::NotCacheScoped`] when `E` is `#[tenant_scoped]` without `cache`;
    /// - [`Error::SharedCacheTable`] when the tenant uses table isolation and `E` has no
    ///   tenant column (refused rather than reading a table every table tenant shares).
    pub fn read_through<E: TenantScoped>(&self) -> Result<ReadThrough<E>> {
        let Scope::Cache { ttl, column } = E::SCOPE else {
            return Err(Error::NotCacheScoped { table: E::default().table_name().to_owned() });
        };
        if column.is_none() && self.isolation() == crate::Isolation::Table {
            return Err(Error::SharedCacheTable {
                table: E::default().table_name().to_owned(),
                tenant: self.id().to_string(),
            });
        }
        Ok(ReadThrough { db: self.clone(), cache: self.cache(), ttl, entity: PhantomData })
    }
}

impl<E> ReadThrough<E>
where
    E: TenantScoped,
    E::Model: Serialize + DeserializeOwned + Send + Sync,
{
    /// The cache this helper uses.
    pub fn cache(&self) -> &TenantCache {
        &self.cache
    }

    /// The model's TTL, from `#[tenant_scoped(cache, ttl = ...)]`.
    pub fn ttl(&self) -> Option<Duration> {
        self.ttl
    }

    /// The cache key of the row with primary key `id`.
    pub fn key(&self, id: impl Into<PrimaryKeyOf<E>>) -> TenantKey {
        key_of::<E>(&id.into().into_value_tuple())
    }

    /// The row with primary key `id`: from the cache if it is there, else from the
    /// database through the tenant's handle, then cached for the model's TTL.
    ///
    /// # Errors
    /// [`Error::Database`] from the query; the cache's errors (see [`TenantCache::get`]).
    pub async fn find_by_id(&self, id: impl Into<PrimaryKeyOf<E>>) -> Result<Option<E::Model>> {
        let values = id.into().into_value_tuple();
        let key = key_of::<E>(&values);
        if let Some(model) = self.cache.get::<E::Model>(&key).await? {
            return Ok(Some(model));
        }
        let Some(model) = with_primary_key::<E, _>(E::find(), values).one(&self.db).await? else {
            return Ok(None);
        };
        self.cache.set(&key, &model, self.ttl).await?;
        Ok(Some(model))
    }

    /// Inserts a row through the tenant's handle and drops any cached entry of its key.
    ///
    /// # Errors
    /// As [`ReadThrough::find_by_id`].
    pub async fn insert<A>(&self, model: A) -> Result<E::Model>
    where
        A: ActiveModelTrait<Entity = E> + ActiveModelBehavior + Send,
        E::Model: IntoActiveModel<A>,
    {
        let model = model.insert(&self.db).await?;
        self.cache.delete(&key_of::<E>(&model.get_primary_key_value())).await?;
        Ok(model)
    }

    /// Updates a row through the tenant's handle and drops its cached entry (the next
    /// read loads the new row).
    ///
    /// # Errors
    /// As [`ReadThrough::find_by_id`].
    pub async fn update<A>(&self, model: A) -> Result<E::Model>
    where
        A: ActiveModelTrait<Entity = E> + ActiveModelBehavior + Send,
        E::Model: IntoActiveModel<A>,
    {
        let model = model.update(&self.db).await?;
        self.cache.delete(&key_of::<E>(&model.get_primary_key_value())).await?;
        Ok(model)
    }

    /// Deletes the row with primary key `id` through the tenant's handle and drops its
    /// cached entry; how many rows were deleted.
    ///
    /// # Errors
    /// As [`ReadThrough::find_by_id`].
    pub async fn delete_by_id(&self, id: impl Into<PrimaryKeyOf<E>>) -> Result<u64> {
        let values = id.into().into_value_tuple();
        let key = key_of::<E>(&values);
        let deleted = with_primary_key::<E, _>(E::delete_many(), values).exec(&self.db).await?.rows_affected;
        self.cache.delete(&key).await?;
        Ok(deleted)
    }

    /// Drops the cached entry of `id` (after a change made around this helper); whether
    /// there was one.
    ///
    /// # Errors
    /// The cache's errors.
    pub async fn invalidate(&self, id: impl Into<PrimaryKeyOf<E>>) -> Result<bool> {
        self.cache.delete(&self.key(id)).await
    }
}

/// `query` filtered to the primary key `values`.
fn with_primary_key<E: EntityTrait, Q: QueryFilter>(mut query: Q, values: ValueTuple) -> Q {
    for (column, value) in E::PrimaryKey::iter().zip(values) {
        query = query.filter(column.into_column().eq(value));
    }
    query
}

/// The cache key of a row: its table, then its primary key as JSON (one value, or an
/// array for a composite key), which is the same for a value however it was obtained.
fn key_of<E: EntityTrait>(values: &ValueTuple) -> TenantKey {
    let key = match values {
        ValueTuple::One(value) => sea_value_to_json_value(value).to_string(),
        many => serde_json::Value::Array(many.iter().map(sea_value_to_json_value).collect()).to_string(),
    };
    TenantKey::new(E::default().table_name(), key)
}
