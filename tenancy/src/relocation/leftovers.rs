//! Storage a move left behind: the source of a tenant that now lives elsewhere, kept
//! (unless `--drop-source`) until `deletetenant --leftovers` removes it. Recorded in the
//! master's `tenancy_leftovers` in the transaction that switched the tenant, so it is
//! never forgotten and never mistaken for an orphan.

#![allow(unreachable_pub, reason = "derive macros generate `pub` items in this module")]

use chrono::{DateTime, Utc};
use sea_orm::entity::prelude::*;
use sea_orm::{ConnectionTrait, QueryOrder, Set};
use serde::Serialize;

use crate::operations::UndoEntry;
use crate::{Error, Result, Tenancy, TenantId};

/// The table's name.
pub(crate) const LEFTOVERS_TABLE: &str = "tenancy_leftovers";

/// The sea-orm entity of `tenancy_leftovers`.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "tenancy_leftovers")]
#[allow(missing_docs, reason = "private entity; the columns are documented on `Leftover`")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant_id: String,
    #[sea_orm(column_type = "JsonBinary")]
    pub object: Json,
    pub reason: String,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
#[allow(missing_docs, reason = "private entity")]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

pub(crate) use self::Column as LeftoverColumn;

/// Storage of a tenant that a move left behind.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Leftover {
    /// The tenant whose former storage it is.
    pub tenant: TenantId,
    /// The object: what removing it drops.
    pub object: UndoEntry,
    /// Why it exists (`moved from schema to database`).
    pub reason: String,
    /// When it was left.
    pub left_at: DateTime<Utc>,
}

/// Records `objects` as `id`'s leftovers, in `db` (the move's switch transaction).
pub(crate) async fn record<C: ConnectionTrait>(
    db: &C,
    id: &TenantId,
    objects: &[UndoEntry],
    reason: &str,
) -> Result<()> {
    let now = Utc::now();
    for object in objects {
        let row = ActiveModel {
            tenant_id: Set(id.to_string()),
            object: Set(encode(id, object)?),
            reason: Set(reason.to_owned()),
            created_at: Set(now),
            ..Default::default()
        };
        Entity::insert(row).exec_without_returning(db).await?;
    }
    Ok(())
}

fn encode(id: &TenantId, object: &UndoEntry) -> Result<serde_json::Value> {
    serde_json::to_value(object).map_err(|err| Error::CorruptRegistry {
        tenant: id.to_string(),
        reason: format!("cannot encode a leftover: {err}"),
    })
}

/// The leftovers of `id` (every tenant's with `None`), oldest first.
pub(crate) async fn list(tenancy: &Tenancy, id: Option<&TenantId>) -> Result<Vec<Leftover>> {
    let mut query = Entity::find().order_by_asc(Column::Id);
    if let Some(id) = id {
        query = query.filter(Column::TenantId.eq(id.as_str()));
    }
    let mut found = Vec::new();
    for row in query.all(tenancy.master()).await? {
        let corrupt = |reason: String| Error::CorruptRegistry { tenant: row.tenant_id.clone(), reason };
        let tenant = TenantId::new(row.tenant_id.clone()).map_err(|err| corrupt(err.to_string()))?;
        let object = serde_json::from_value(row.object.clone()).map_err(|err| corrupt(format!("leftover: {err}")))?;
        found.push(Leftover { tenant, object, reason: row.reason.clone(), left_at: row.created_at });
    }
    Ok(found)
}

/// Removes `id`'s leftovers, each object dropped before its row is deleted, so a run
/// killed part-way is finished by the next.
pub(crate) async fn remove(tenancy: &Tenancy, id: &TenantId) -> Result<Vec<Leftover>> {
    let rows =
        Entity::find().filter(Column::TenantId.eq(id.as_str())).order_by_asc(Column::Id).all(tenancy.master()).await?;
    let mut removed = Vec::new();
    for row in rows {
        let object: UndoEntry = serde_json::from_value(row.object.clone())
            .map_err(|err| Error::CorruptRegistry { tenant: id.to_string(), reason: format!("leftover: {err}") })?;
        crate::storage::undo(tenancy, id, &object).await.map_err(|source| Error::DeleteFailed {
            tenant: id.to_string(),
            what: object.to_string(),
            source,
        })?;
        Entity::delete_by_id(row.id).exec(tenancy.master()).await?;
        removed.push(Leftover { tenant: id.clone(), object, reason: row.reason, left_at: row.created_at });
    }
    Ok(removed)
}
