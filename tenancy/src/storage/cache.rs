//! The cache driver: a cache-isolated tenant has a namespace of the shared cache (see
//! [`crate::cache`]) and no relational storage, so there is nothing to provision, undo,
//! migrate or connect to. The namespace exists as soon as a key is written and goes with
//! [`crate::cache::TenantCache::clear`].
