//! Cache namespaces of tenants that are not registered.
//!
//! Reported, never cleared: the key layout carries no mark of the master, and another
//! master sharing the cache and its prefix has namespaces that look the same (for its
//! cache-isolated tenants, all their data).

use super::{Finding, Owned};
use crate::{Result, Tenancy};

/// The tenant namespaces in the cache, `(tenant, keys)`; empty when the store cannot list
/// its keys (the in-process cache of another process, a custom store).
pub(super) async fn list(tenancy: &Tenancy) -> Result<Vec<(String, u64)>> {
    Ok(tenancy.shared_cache().tenant_namespaces().await?.unwrap_or_default())
}

pub(super) fn judge(namespaces: Vec<(String, u64)>, owned: &Owned) -> Vec<Finding> {
    namespaces
        .into_iter()
        .filter(|(namespace, _)| !owned.tenants.contains(namespace))
        .map(|(namespace, keys)| Finding::UnownedCacheNamespace { namespace, keys })
        .collect()
}
