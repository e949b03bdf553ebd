//! The one error type of the `tenancy` crate.

use std::path::PathBuf;

/// A boxed error from code the framework calls back into (migrations, hooks).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in `tenancy`.
///
/// Messages are written for the person running the command: each says what was wrong
/// and, where there is a choice, what is valid. The underlying cause, when there is one,
/// is available through [`std::error::Error::source`] and is never repeated in the
/// message (so `anyhow`'s `{:#}` prints it once).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The tenant id is not a valid tenant id.
    #[error(
        "Invalid tenant ID '{id}': {reason}. A tenant ID starts with a lower-case ASCII letter, \
         then lower-case letters, digits or '_', at most {max} bytes",
        max = crate::TenantId::MAX_LEN
    )]
    InvalidTenantId {
        /// The rejected input, printed with control characters escaped.
        id: String,
        /// Why it was rejected.
        reason: String,
    },

    /// The isolation type is not one of the four.
    #[error("Invalid isolation type\nValid options: database, schema, table, cache")]
    InvalidIsolation {
        /// The rejected input.
        given: String,
    },

    /// A SQL identifier given for the tenant (database or user name) is not acceptable.
    #[error(
        "Invalid {what} '{value}': {reason}. Use a lower-case ASCII letter first, then \
         lower-case letters, digits or '_', at most 63 bytes"
    )]
    InvalidIdentifier {
        /// What the identifier names (`database name`, `database user`).
        what: &'static str,
        /// The rejected input.
        value: String,
        /// Why it was rejected.
        reason: String,
    },

    /// A port is not a number from 1 to 65535.
    #[error("Invalid port '{given}': expected a number from 1 to 65535")]
    InvalidPort {
        /// The rejected input.
        given: String,
    },

    /// A host name is empty or contains characters no host name has.
    #[error("Invalid database host '{given}': expected a host name or IP address")]
    InvalidHost {
        /// The rejected input.
        given: String,
    },

    /// A value that creating a tenant needs was not given (or was blank).
    #[error("Missing {value}")]
    Missing {
        /// Which value.
        value: MissingValue,
    },

    /// The master database URL is not one `tenancy` can use.
    #[error("Unsupported database URL '{url}': {reason}")]
    UnsupportedUrl {
        /// The URL with any password redacted.
        url: String,
        /// What is wrong and what is supported.
        reason: &'static str,
    },

    /// `TENANCY_POOLER` (or the pooler given to the builder) names no pooler mode.
    #[error("Invalid pooler '{given}': expected none, session or transaction (TENANCY_POOLER)")]
    InvalidPooler {
        /// The value given.
        given: String,
    },

    /// Behind a transaction-mode pooler some work cannot go through it (the registry's
    /// migration check, `LISTEN`, creating databases) and needs the database directly.
    #[error(
        "A transaction-mode pooler needs the master database's direct URL as well: set TENANCY_DIRECT_URL \
         (the registry check, its LISTEN and provisioning cannot run through the pooler)"
    )]
    PoolerNeedsDirectUrl,

    /// A tenant with this id is already registered (or being provisioned right now).
    #[error("Tenant with ID '{id}' already exists")]
    TenantExists {
        /// The tenant id.
        id: String,
    },

    /// No tenant with this id is registered.
    #[error("Tenant '{id}' does not exist")]
    TenantNotFound {
        /// The tenant id.
        id: String,
    },

    /// A domain name is not one a customer's site can have.
    #[error("Invalid domain '{given}': {reason}. Give a host name such as shop.example.com")]
    InvalidDomain {
        /// The rejected input, printed with control characters escaped.
        given: String,
        /// Why it was rejected.
        reason: String,
    },

    /// The domain leads to another tenant already: a domain has one owner.
    #[error("Domain '{domain}' already belongs to tenant '{owner}'; remove it there first")]
    DomainTaken {
        /// The domain, normalised.
        domain: String,
        /// The tenant that has it.
        owner: String,
    },

    /// No tenant has this domain.
    #[error("No tenant has the domain '{domain}'")]
    DomainNotFound {
        /// The domain, normalised.
        domain: String,
    },

    /// A database server could not be reached or refused the credentials.
    #[error("Cannot connect to database server")]
    CannotConnect {
        /// Where we tried to connect, with any password redacted.
        target: String,
        /// The driver's error.
        #[source]
        source: sea_orm::DbErr,
    },

    /// The tenant's database already exists and this run was asked to create it.
    #[error("Database '{name}' already exists on {server}")]
    DatabaseExists {
        /// The database name.
        name: String,
        /// `host:port` of the server.
        server: String,
    },

    /// The tenant's database file (SQLite) already exists and this run was asked to create it.
    #[error("Database file '{}' already exists", path.display())]
    DatabaseFileExists {
        /// The file.
        path: PathBuf,
    },

    /// The tenant's database (or SQLite file) does not exist, and this run was told not to
    /// create it.
    #[error("Database '{name}' does not exist, and this run was told to use an existing one")]
    DatabaseMissing {
        /// The database name or file.
        name: String,
    },

    /// The tenant's database role already exists and this run was asked to create it.
    #[error("Database user '{name}' already exists on {server}; choose another user name")]
    RoleExists {
        /// The role name.
        name: String,
        /// `host:port` of the server.
        server: String,
    },

    /// The login role a new schema or table tenant would get exists already.
    #[error(
        "Login role '{name}' already exists on the master's server (left over from an earlier tenant with this ID?); \
         drop it (DROP OWNED BY, then DROP ROLE) or choose another tenant ID"
    )]
    LoginRoleExists {
        /// The role name.
        name: String,
    },

    /// The tenant's schema already exists.
    #[error("Schema '{name}' already exists in the master database; choose another tenant ID")]
    SchemaExists {
        /// The schema name.
        name: String,
    },

    /// Schema isolation was asked for on a master database that is not PostgreSQL.
    #[error(
        "Schema isolation needs a PostgreSQL master database, and this master is {backend}; \
         database, table and cache isolation work on any master"
    )]
    SchemaNeedsPostgres {
        /// The master's backend (`SQLite`).
        backend: &'static str,
    },

    /// The operator's secret key could not be read, parsed or created.
    #[error("Cannot read the secret key from {location}: {reason}")]
    SecretKey {
        /// `TENANCY_SECRET_KEY` or the key file's path.
        location: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A stored secret could not be decrypted with the operator's key.
    #[error(
        "Cannot decrypt the stored password of tenant '{tenant}': the secret key is not the one it \
         was encrypted with (check TENANCY_SECRET_KEY / TENANCY_SECRET_KEY_FILE)"
    )]
    Decrypt {
        /// The tenant whose secret failed.
        tenant: String,
    },

    /// A registry row holds a value this version does not understand.
    #[error("Registry row for tenant '{tenant}' is corrupt: {reason}")]
    CorruptRegistry {
        /// The tenant id of the row.
        tenant: String,
        /// What is wrong with it.
        reason: String,
    },

    /// Provisioning failed part-way; what this run created was removed again.
    #[error("Creating tenant '{tenant}' failed while {step}; everything this run created was removed")]
    ProvisioningFailed {
        /// The tenant id.
        tenant: String,
        /// The step that failed.
        step: crate::ProvisionStep,
        /// The cause.
        #[source]
        source: BoxError,
    },

    /// Provisioning failed and undoing it failed too: manual clean-up is needed.
    #[error(
        "Creating tenant '{tenant}' failed while {step}, and removing what it created failed too; \
         left behind: {leftovers}"
    )]
    RollbackFailed {
        /// The tenant id.
        tenant: String,
        /// The step that failed.
        step: crate::ProvisionStep,
        /// What could not be removed (for the operator to drop by hand).
        leftovers: String,
        /// The original cause.
        #[source]
        source: BoxError,
    },

    /// Two `#[tenant_scoped]` models register the same table.
    #[error(
        "Table '{table}' is registered by two #[tenant_scoped] models, {first} and {second}; \
         a table has one scope, so keep the attribute on one of them"
    )]
    DuplicateScopedTable {
        /// The table name.
        table: &'static str,
        /// The registration that sorts first (by entity path).
        first: &'static crate::ScopedModel,
        /// The other registration.
        second: &'static crate::ScopedModel,
    },

    /// The row-security step ([`crate::enable_row_security`]) met something of the
    /// application's schema that it cannot make safe for table isolation and will not
    /// leave as it is: a foreign key between scoped tables without the tenant column that
    /// cannot be rewritten (or, on SQLite, cannot be rewritten at all), a view over scoped
    /// tables it cannot make `security_invoker`, a materialized view it cannot revoke.
    /// Nothing was changed: the step's transaction (and the migration's) rolled back.
    #[error("Table isolation cannot be made safe around {object}: {reason}")]
    RowSecurityRefused {
        /// What was refused, as in `foreign key "labels_board_id_fkey" of table "labels"`.
        object: String,
        /// Why, and what to declare or do instead.
        reason: String,
    },

    /// A table is declared twice among the `#[tenant_scoped]` and `#[tenancy::shared]`
    /// models: by two shared models, or as shared and as scoped.
    #[error(
        "Table '{table}' is declared by both {first} and {second}; a table is either scoped to \
         its tenants or shared by all of them, declared once: keep one of the attributes"
    )]
    ConflictingTableDeclaration {
        /// The table name.
        table: &'static str,
        /// The declaration that sorts first, with its attribute.
        first: String,
        /// The other declaration.
        second: String,
    },

    /// Another live process runs a lifecycle operation on the tenant.
    #[error(
        "Tenant '{tenant}' is busy: a {kind} operation started {started} by {worker} is still running; \
         wait for it to finish and try again"
    )]
    OperationInProgress {
        /// The tenant id.
        tenant: String,
        /// What the running operation does.
        kind: crate::operations::OperationKind,
        /// When it started.
        started: chrono::DateTime<chrono::Utc>,
        /// `host:pid` of its process.
        worker: String,
    },

    /// A lifecycle operation on the tenant was interrupted (its process is gone) and must
    /// be finished before anything else acts on the tenant.
    #[error(
        "Tenant '{tenant}' has an unfinished {kind} operation (started {started} by {worker}, stopped at \
         '{step}') whose process is gone: run `{command} {arguments}` again with the same options (it {recovery}), \
         or `tenancydoctor --repair`",
        command = kind.command(),
        recovery = kind.recovery()
    )]
    StaleOperation {
        /// The tenant id.
        tenant: String,
        /// What the operation did.
        kind: crate::operations::OperationKind,
        /// When it started.
        started: chrono::DateTime<chrono::Utc>,
        /// `host:pid` of the process that ran it.
        worker: String,
        /// The last step it started.
        step: String,
        /// The arguments that resume it: the tenant id, and for a rename both ids.
        arguments: String,
    },

    /// Removing one object of a tenant being deleted failed; the delete stays unfinished
    /// and a re-run finishes it.
    #[error("Could not {what} of tenant '{tenant}': {source}; run the delete again to finish it")]
    DeleteFailed {
        /// The tenant id.
        tenant: String,
        /// What was being removed.
        what: String,
        /// The cause.
        #[source]
        source: BoxError,
    },

    /// A delete was stopped after a step by its caller; a re-run finishes it.
    #[error("The delete of tenant '{tenant}' was stopped after '{step}': {source}; run it again to finish it")]
    DeleteInterrupted {
        /// The tenant id.
        tenant: String,
        /// The last step done.
        step: String,
        /// Why it stopped.
        #[source]
        source: BoxError,
    },

    /// A tenant cannot be renamed to the id it has.
    #[error("Tenant '{id}' already has this id: give a different new id")]
    RenameToSameId {
        /// The id given twice.
        id: String,
    },

    /// A step of a rename failed; the rename stays unfinished (the tenant is not served)
    /// and a re-run finishes it.
    #[error("Renaming tenant '{from}' to '{to}' failed at '{step}': {source}; run the rename again to finish it")]
    RenameFailed {
        /// The tenant's id before the rename.
        from: String,
        /// The new id.
        to: String,
        /// The step that failed.
        step: String,
        /// The cause.
        #[source]
        source: BoxError,
    },

    /// A rename was stopped after a step by its caller; a re-run finishes it.
    #[error("The rename of tenant '{from}' to '{to}' was stopped after '{step}': {source}; run it again to finish it")]
    RenameInterrupted {
        /// The tenant's id before the rename.
        from: String,
        /// The new id.
        to: String,
        /// The last step done.
        step: String,
        /// Why it stopped.
        #[source]
        source: BoxError,
    },

    /// The backup of a tenant could not be written; nothing was removed.
    #[error("Could not write the backup of tenant '{tenant}' to '{path}': {reason}; nothing was deleted")]
    BackupFailed {
        /// The tenant id.
        tenant: String,
        /// The backup file.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },

    /// This process lost the lock of its operation (its lock connection ended), so it
    /// stopped before the next step; the operation is stale and a re-run finishes it.
    #[error(
        "Lost the lock of the operation on tenant '{tenant}' before '{step}'; stopped there: run the command again"
    )]
    OperationLost {
        /// The tenant id.
        tenant: String,
        /// The step not started.
        step: String,
    },

    /// Deleting a database tenant waited too long for its sessions to end.
    #[error(
        "Database '{database}' of tenant '{tenant}' still has {sessions} session(s) after {waited_secs} s; \
         nothing was dropped: stop them (or raise --wait) and run the command again"
    )]
    SessionsRemain {
        /// The tenant id.
        tenant: String,
        /// The database (or role) whose sessions remain.
        database: String,
        /// How many remain.
        sessions: i64,
        /// How long the delete waited.
        waited_secs: u64,
    },

    /// The tenant is being moved (`movetenant`): it is served again, from its new place,
    /// when the move finishes or is rolled back.
    #[error("Tenant '{tenant}' is being moved; it is served again when the move finishes")]
    TenantMoving {
        /// The tenant id.
        tenant: String,
    },

    /// A move, clone or copy asked for something tenancy cannot do, and nothing was
    /// changed.
    #[error("Cannot {action} tenant '{tenant}': {reason}")]
    CannotRelocate {
        /// `move` or `clone`.
        action: &'static str,
        /// The tenant id.
        tenant: String,
        /// Why, and what is possible instead.
        reason: String,
    },

    /// Copying into shared tables would give a row a key another tenant's row holds.
    #[error(
        "Key {key} of table '{table}' is taken by another tenant's row: tenant '{tenant}' cannot be copied into the \
         shared tables with its keys; nothing was copied"
    )]
    KeyCollision {
        /// The tenant whose rows were copied.
        tenant: String,
        /// The table.
        table: String,
        /// The key, as `column=value`.
        key: String,
    },

    /// A table could not be copied.
    #[error("Cannot copy table '{table}': {reason}")]
    CopyFailed {
        /// The table.
        table: String,
        /// Why.
        reason: String,
    },

    /// The copy's verification found the target's rows differ from the source's.
    #[error(
        "Verifying the copy of tenant '{tenant}' failed at table '{table}': the source has {source_rows} row(s) \
         (checksum {source_digest}), the copy {target_rows} (checksum {target_digest}){foreign}; the copy was \
         removed and the tenant is served from where it was",
        foreign = if *foreign_rows > 0 { format!(", {foreign_rows} of them with another tenant id") } else { String::new() }
    )]
    CopyMismatch {
        /// The tenant.
        tenant: String,
        /// The table.
        table: String,
        /// Rows at the source.
        source_rows: u64,
        /// Rows of the copy.
        target_rows: u64,
        /// The source's checksum.
        source_digest: String,
        /// The copy's checksum.
        target_digest: String,
        /// Rows of the copy whose tenant column is not the tenant's.
        foreign_rows: u64,
    },

    /// A move stopped part-way; what it made was removed again (or, after the switch, it
    /// finishes when run again).
    #[error("Moving tenant '{tenant}' failed while {step}: {source}")]
    MoveFailed {
        /// The tenant id.
        tenant: String,
        /// The step that failed.
        step: String,
        /// Why.
        #[source]
        source: BoxError,
    },

    /// The tenant still has storage a move left behind (kept until removed): moving it
    /// again would mix the two.
    #[error(
        "Tenant '{tenant}' has {count} object(s) left from an earlier move ({objects}); remove them first \
         (deletetenant --leftovers)"
    )]
    LeftoversRemain {
        /// The tenant id.
        tenant: String,
        /// How many.
        count: usize,
        /// What they are.
        objects: String,
    },

    /// The tenant is registered but not ready to be served (its provisioning has not
    /// finished, or failed part-way in a run that could not clean up).
    #[error(
        "Tenant '{tenant}' is not ready (status '{status}'): it is not served while it is being created, deleted or renamed"
    )]
    TenantNotReady {
        /// The tenant id.
        tenant: String,
        /// Its registry status.
        status: crate::TenantStatus,
    },

    /// The tenant is suspended: it is not served until it is resumed.
    #[error("Tenant '{tenant}' is suspended{}", reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    TenantSuspended {
        /// The tenant id.
        tenant: String,
        /// The operator's reason, if one was given.
        reason: Option<String>,
    },

    /// [`crate::Tenancy::tenant`] was asked for a handle of a tenant whose isolation mode
    /// this master cannot serve: a schema tenant in a SQLite master's registry (schema
    /// isolation needs PostgreSQL; such a row was not made by `create_tenant`).
    #[error(
        "Tenant '{tenant}' uses {isolation} isolation, which needs a PostgreSQL master database; \
         this master is SQLite"
    )]
    HandleNotYetSupported {
        /// The tenant id.
        tenant: String,
        /// The tenant's isolation mode ([`crate::Isolation::Schema`]).
        isolation: crate::Isolation,
    },

    /// A statement given to a tenant's handle on SQLite that tenancy refuses, because SQLite
    /// has no row-level security or privileges to fall back on:
    ///
    /// - a table-isolated tenant on a SQLite master may run only `SELECT`, `INSERT`,
    ///   `UPDATE` and `DELETE` (with common table expressions) on its `#[tenant_scoped]`
    ///   tables (scoped to its rows) and the `#[tenancy::shared]` ones (read-only unless
    ///   declared `writable`); everything else is refused: the registry, undeclared
    ///   tables, `sqlite_master`, other schemas, pragma functions, DDL, `PRAGMA`,
    ///   `ATTACH`, transaction control, SQL tenancy cannot parse, and statements on a
    ///   scoped table it cannot restrict to the tenant's rows;
    /// - any SQLite tenant (database isolation too) may not `ATTACH` or `DETACH` a
    ///   database, nor write a copy of its database elsewhere (`VACUUM INTO`).
    #[error("Tenant '{tenant}': refusing {table} ({reason})")]
    UnscopableStatement {
        /// The tenant id.
        tenant: String,
        /// What was refused: a table (`table "tenancy_tenants"`) or a statement
        /// (`PRAGMA`, `ATTACH`).
        table: String,
        /// Why, and what is allowed instead.
        reason: String,
    },

    /// [`crate::current`] (or [`crate::spawn`]) was called outside any tenant scope.
    #[error(
        "No tenant in scope: wrap the call in `tenancy::scope(tenant, async {{ ... }})`, or pass the \
         tenant's handle explicitly (a plain tokio::spawn does not carry the tenant: use tenancy::spawn)"
    )]
    NoTenantInScope,

    /// A tenant job ([`crate::jobs::TenantJob`]) was not run: its tenant could not be
    /// served when the job came to run (`source` says why). Nothing of the job ran, and it
    /// never runs under another tenant or none; `disposition` tells the queue whether to
    /// try it again later or to discard it.
    #[error("Job for tenant '{tenant}' not run: {disposition}")]
    JobRefused {
        /// The envelope's tenant id.
        tenant: String,
        /// Retry later, or discard.
        disposition: crate::jobs::Disposition,
        /// Why the tenant could not be served ([`Error::TenantNotFound`],
        /// [`Error::TenantSuspended`], [`Error::TenantMoving`], ...).
        #[source]
        source: Box<Error>,
    },

    /// The cache configuration is not usable (for example a cache URL that does not
    /// parse, or a scheme this build does not support).
    #[error("Invalid cache URL '{url}': {reason}")]
    InvalidCacheUrl {
        /// The URL with any password redacted.
        url: String,
        /// What is wrong and what is supported.
        reason: String,
    },

    /// The cache server could not be reached (refused, timed out, or the connection
    /// dropped). Nothing was read or written; retry once it is back.
    #[error("Cannot reach the cache at {target}")]
    CacheUnavailable {
        /// The cache URL with any password redacted.
        target: String,
        /// The client's error.
        #[source]
        source: BoxError,
    },

    /// The cache server answered a command with an error.
    #[error("Cache command {command} failed on {target}")]
    CacheCommand {
        /// The command (`GET`, `SET`, `UNLINK`, `SCAN`).
        command: &'static str,
        /// The cache URL with any password redacted.
        target: String,
        /// The server's error.
        #[source]
        source: BoxError,
    },

    /// A cached value could not be turned into (or made from) the type asked for: the
    /// model changed shape since it was cached, or two models share a cache model name.
    /// The key is not printed (it may be a session token).
    #[error("Cannot {action} a cached value of model '{model}' as {type_name}")]
    CacheValue {
        /// `decode` or `encode`.
        action: &'static str,
        /// The model (key group) of the entry.
        model: String,
        /// The Rust type asked for.
        type_name: &'static str,
        /// The serializer's error.
        #[source]
        source: serde_json::Error,
    },

    /// The read-through helper was asked for a model that is not
    /// `#[tenant_scoped(cache)]`.
    #[error(
        "Model '{table}' is not cache-scoped: add #[tenant_scoped(cache)] (optionally with ttl = <seconds>) \
         to use the read-through cache helper"
    )]
    NotCacheScoped {
        /// The model's table.
        table: String,
    },

    /// The read-through helper of a cache-scoped model without a tenant column was asked
    /// for a table-isolated tenant: the model's table is shared by every table tenant, so
    /// reading through to it would reach other tenants' rows.
    #[error(
        "Model '{table}' is cache-scoped without a tenant column, and tenant '{tenant}' uses table isolation,          where that table is shared by all table tenants: declare its tenant column with          #[tenant_scoped(cache, column = \"tenant_id\")] to read it through per tenant"
    )]
    SharedCacheTable {
        /// The model's table.
        table: String,
        /// The table-isolated tenant.
        tenant: String,
    },

    /// `tenancydoctor --repair` did not repair a finding: it is not one repairs may fix,
    /// or it changed since it was found (a registry row owns the object now, its mark is
    /// gone), or the repair failed.
    #[error("Cannot repair {subject}: {reason}")]
    RepairFailed {
        /// The object, as [`crate::doctor::Finding::subject`] names it.
        subject: String,
        /// Why.
        reason: String,
    },

    /// A server name is not valid.
    #[error(
        "Invalid server name '{name}': {reason}. A server name starts with a lower-case ASCII letter, \
         then lower-case letters, digits, '_' or '-', at most 40 bytes"
    )]
    InvalidServerName {
        /// The rejected input, with control characters escaped.
        name: String,
        /// Why it was rejected.
        reason: String,
    },

    /// A server weight is out of range.
    #[error("Invalid server weight '{given}': expected a whole number from 1 to 10000")]
    InvalidWeight {
        /// The rejected input.
        given: String,
    },

    /// No server has this name.
    #[error("No server named '{name}'. Known servers: {known}")]
    UnknownServer {
        /// The name asked for.
        name: String,
        /// The servers there are, comma-separated.
        known: String,
    },

    /// `addserver` was given a name or an address another server has.
    #[error("Server '{name}' cannot be added: server '{existing}' at {address} has that name or address")]
    ServerExists {
        /// The new server's name.
        name: String,
        /// The server that has the name or address.
        existing: String,
        /// Its address.
        address: String,
    },

    /// A server could not be reached, or refused the credentials.
    #[error("Server '{server}' at {address} cannot be reached or refused the connection")]
    ServerUnreachable {
        /// The server's name.
        server: String,
        /// `host:port`.
        address: String,
        /// The cause.
        #[source]
        source: Box<Error>,
    },

    /// A tenant's server cannot be reached (the TCP connection is refused or not answered
    /// within a few seconds): only the tenants on that server fail, the others are served.
    /// `server` is the registered server's name, or `host:port` for an address no server
    /// is registered at (or when the master could not be asked).
    #[error("Tenant '{tenant}' is on server '{server}' at {address}, which cannot be reached")]
    ServerUnavailable {
        /// The tenant.
        tenant: String,
        /// The registered server's name, else `host:port`.
        server: String,
        /// `host:port`.
        address: String,
        /// What connecting failed with.
        #[source]
        source: Box<sea_orm::DbErr>,
    },

    /// The admin credentials given for a server may not create databases and roles.
    #[error(
        "Role '{user}' may not create databases and roles: a server's admin must be a superuser, \
         or have CREATEDB and CREATEROLE"
    )]
    ServerAdminLacksPrivileges {
        /// The role.
        user: String,
    },

    /// A new tenant was asked for on a server that takes none.
    #[error(
        "Server '{server}' is {state} and takes no new tenants; pick another with --server, \
         or make it active again with `undrainserver {server}`"
    )]
    ServerNotAccepting {
        /// The server.
        server: String,
        /// Its state (`draining`, `down`).
        state: &'static str,
    },

    /// Placement found no active server.
    #[error("No active server takes new tenants (servers: {servers}); run `undrainserver NAME` or `addserver`")]
    NoActiveServer {
        /// Every server with its state.
        servers: String,
    },

    /// Servers are registered in a PostgreSQL master only.
    #[error("Servers need a PostgreSQL master database; this master is SQLite")]
    ServersNeedPostgres,

    /// A `tenancy_servers` row holds a value this version does not understand.
    #[error("Server row '{server}' is corrupt: {reason}")]
    CorruptServer {
        /// The server's name as stored.
        server: String,
        /// What is wrong with it.
        reason: String,
    },

    /// `--server` was given for a mode whose storage is always the master's.
    #[error(
        "--server '{server}' does not apply to {isolation} isolation: its data lives in the master database; \
             use it with database or schema isolation"
    )]
    ServerNotPlaceable {
        /// The server given.
        server: String,
        /// The tenant's mode.
        isolation: crate::Isolation,
    },

    /// A statement returned something it never returns.
    #[error("Unexpected answer from the database: {reason}")]
    Statement {
        /// What was unexpected.
        reason: String,
    },

    /// A database statement failed.
    #[error("Database error")]
    Database(#[from] sea_orm::DbErr),

    /// A file could not be read or written.
    #[error("Cannot access '{}'", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A value that [`crate::Tenancy::create_tenant`] needs and was not given
/// ([`Error::Missing`]). A front end maps it to its own way of giving the value (a flag,
/// a prompt, a form field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MissingValue {
    /// The tenant's human-readable name (a blank one counts as missing).
    TenantName,
    /// The database of a database-isolated tenant ([`crate::NewTenant::database`]).
    DatabaseName,
    /// The role a database-isolated tenant on PostgreSQL connects as.
    DatabaseUser,
    /// The password of that role.
    DatabasePassword,
}

impl std::fmt::Display for MissingValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MissingValue::TenantName => "tenant name",
            MissingValue::DatabaseName => "database name of a database-isolated tenant",
            MissingValue::DatabaseUser => "database user",
            MissingValue::DatabasePassword => "database password",
        })
    }
}

/// Lets APIs that take `impl TryInto<TenantId>` take an already valid [`crate::TenantId`],
/// whose conversion cannot fail.
impl From<std::convert::Infallible> for Error {
    fn from(never: std::convert::Infallible) -> Self {
        match never {}
    }
}

/// An error and its causes on one line, joined with `: `, for logs and reports; a cause
/// whose text the line already holds (wrappers often repeat their source's) is left out.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
