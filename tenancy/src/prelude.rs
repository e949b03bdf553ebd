//! The names most applications use, in one import:
//!
//! ```
//! use tenancy::prelude::*;
//!
//! # async fn demo() -> tenancy::Result<()> {
//! let tenancy = Tenancy::connect(tenancy::master_url_from_env()).await?;
//! let new = NewTenant::new("globex", "Globex Corporation", Isolation::Table)?;
//! # Ok(()) }
//! ```

pub use crate::cache::{GlobalKey, TenantCache, TenantKey};
pub use crate::{
    Error as TenancyError, Isolation, NewDatabase, NewTenant, Placement, Scope, Tenancy, TenantConnection, TenantId,
    TenantScoped, TenantStatus, TenantTransaction, shared, tenant_scoped,
};
