//! [`TenantTransaction`]: a transaction of a tenant's handle.

use std::future::Future;
use std::pin::Pin;

use sea_orm::{
    AccessMode, ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, ExecResult, IsolationLevel, QueryResult,
    Statement, StreamTrait, TransactionError, TransactionOptions, TransactionSession, TransactionStream,
    TransactionTrait,
};

use tracing::Instrument;

use super::call::{Call, Execute, QueryAll, QueryOne, Unprepared};
use crate::TenantConnection;

/// A transaction of a [`TenantConnection`], from `handle.begin()` or
/// `handle.transaction(...)`: pass `&txn` wherever sea-orm takes a connection, then
/// [`commit`](TransactionSession::commit) or [`rollback`](TransactionSession::rollback)
/// it (dropped without either, it rolls back, as sea-orm's do).
///
/// It wraps sea-orm's [`DatabaseTransaction`] on the tenant's storage, bound to the tenant
/// for its whole life like the handle, and keeps the handle's guarantees for every
/// statement inside it: on a SQLite master, a table-isolated tenant's statements are
/// checked against the allowlist and scoped to the tenant (or refused) exactly as on the
/// handle, and no SQLite tenant's statement may `ATTACH` a database; a statement PostgreSQL refuses
/// because the tenant's tables changed shape since the driver cached it makes the
/// tenant's pool reopen, so the next transaction runs on fresh connections. Nested
/// [`begin`](TransactionTrait::begin) calls are savepoints, as in sea-orm. The inner
/// transaction is deliberately not reachable: statements must go through the wrapper.
pub struct TenantTransaction {
    txn: DatabaseTransaction,
    handle: TenantConnection,
    /// An outermost transaction bound to the tenant on the shared master pool
    /// ([`crate::TenantBinding::SharedTransactions`]): its commit resets the session
    /// first (`binding::end_bound`). Savepoints nested in it leave that to it.
    bound: bool,
}

impl std::fmt::Debug for TenantTransaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantTransaction").field("tenant", self.handle.id()).finish_non_exhaustive()
    }
}

impl TenantTransaction {
    pub(crate) fn new(txn: DatabaseTransaction, handle: TenantConnection) -> Self {
        Self { txn, handle, bound: false }
    }

    /// An outermost transaction bound to the tenant on the shared master pool.
    pub(crate) fn bound(txn: DatabaseTransaction, handle: TenantConnection) -> Self {
        Self { txn, handle, bound: true }
    }

    /// Commits the transaction (releases the savepoint, for a nested one).
    ///
    /// On the shared master pool ([`crate::TenantBinding::SharedTransactions`]) the
    /// outermost transaction first resets the session in the same connection, in one
    /// extra round trip: temporary objects, session-level settings, held cursors and the
    /// like that its statements made are gone before the connection is pooled again.
    /// A transaction a failed statement has aborted is rolled back instead, and `Ok` is
    /// returned, as sea-orm does (PostgreSQL answers that commit with a rollback).
    ///
    /// # Errors
    /// The database's error when the commit (or the session reset) fails; the
    /// transaction is then rolled back.
    pub async fn commit(self) -> Result<(), DbErr> {
        if self.bound {
            return super::binding::end_bound(self.txn, &self.handle.inner.tenancy).await;
        }
        self.txn.commit().await
    }

    /// Rolls the transaction back (to the savepoint, for a nested one).
    ///
    /// # Errors
    /// The database's error when the rollback fails.
    pub async fn rollback(self) -> Result<(), DbErr> {
        self.txn.rollback().await
    }

    /// The tenant's handle this transaction belongs to.
    pub fn handle(&self) -> &TenantConnection {
        &self.handle
    }

    /// Runs one call in the transaction, checked as the handle checks it; a stale cached
    /// plan makes the handle's pool reopen for the next transaction.
    async fn run<Q: Call>(&self, call: Q) -> Result<Q::Output, DbErr> {
        let span = self.handle.statement_span(Q::KIND);
        async {
            call.checked(self.handle.check())?.run(&self.txn).await.inspect_err(|err| {
                self.handle.stale_plan(err);
            })
        }
        .instrument(span)
        .await
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for TenantTransaction {
    fn get_database_backend(&self) -> DbBackend {
        ConnectionTrait::get_database_backend(&self.txn)
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        self.run(Execute(stmt)).await
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        self.run(Unprepared::Sql(sql)).await
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        self.run(QueryOne(stmt)).await
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        self.run(QueryAll(stmt)).await
    }
}

impl StreamTrait for TenantTransaction {
    type Stream<'a> = TransactionStream<'a>;

    fn get_database_backend(&self) -> DbBackend {
        ConnectionTrait::get_database_backend(&self.txn)
    }

    fn stream_raw<'a>(
        &'a self,
        stmt: Statement,
    ) -> Pin<Box<dyn Future<Output = Result<Self::Stream<'a>, DbErr>> + 'a + Send>> {
        Box::pin(async move { self.txn.stream_raw(self.handle.check().statement(stmt)?).await })
    }
}

#[async_trait::async_trait]
impl TransactionSession for TenantTransaction {
    async fn commit(self) -> Result<(), DbErr> {
        TenantTransaction::commit(self).await
    }

    async fn rollback(self) -> Result<(), DbErr> {
        TenantTransaction::rollback(self).await
    }
}

#[async_trait::async_trait]
impl TransactionTrait for TenantTransaction {
    type Transaction = TenantTransaction;

    async fn begin(&self) -> Result<TenantTransaction, DbErr> {
        Ok(TenantTransaction::new(self.txn.begin().await?, self.handle.clone()))
    }

    async fn begin_with_config(
        &self,
        isolation_level: Option<IsolationLevel>,
        access_mode: Option<AccessMode>,
    ) -> Result<TenantTransaction, DbErr> {
        Ok(TenantTransaction::new(self.txn.begin_with_config(isolation_level, access_mode).await?, self.handle.clone()))
    }

    async fn begin_with_options(&self, options: TransactionOptions) -> Result<TenantTransaction, DbErr> {
        Ok(TenantTransaction::new(self.txn.begin_with_options(options).await?, self.handle.clone()))
    }

    async fn transaction<F, T, E>(&self, callback: F) -> Result<T, TransactionError<E>>
    where
        F: for<'c> FnOnce(&'c TenantTransaction) -> Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>> + Send,
        T: Send,
        E: std::fmt::Display + std::fmt::Debug + Send,
    {
        run(self.begin().await.map_err(TransactionError::Connection)?, callback).await
    }

    async fn transaction_with_config<F, T, E>(
        &self,
        callback: F,
        isolation_level: Option<IsolationLevel>,
        access_mode: Option<AccessMode>,
    ) -> Result<T, TransactionError<E>>
    where
        F: for<'c> FnOnce(&'c TenantTransaction) -> Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>> + Send,
        T: Send,
        E: std::fmt::Display + std::fmt::Debug + Send,
    {
        let txn = self.begin_with_config(isolation_level, access_mode).await.map_err(TransactionError::Connection)?;
        run(txn, callback).await
    }
}

/// Runs `callback` in `txn`: committed when it succeeds, rolled back when it fails.
pub(crate) async fn run<F, T, E>(txn: TenantTransaction, callback: F) -> Result<T, TransactionError<E>>
where
    F: for<'c> FnOnce(&'c TenantTransaction) -> Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>> + Send,
    T: Send,
    E: std::fmt::Display + std::fmt::Debug + Send,
{
    match callback(&txn).await {
        Ok(value) => {
            txn.commit().await.map_err(TransactionError::Connection)?;
            Ok(value)
        }
        Err(err) => {
            txn.rollback().await.map_err(TransactionError::Connection)?;
            Err(TransactionError::Transaction(err))
        }
    }
}
