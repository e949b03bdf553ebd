//! One `ConnectionTrait` call as a value, so that a handle's route decides in one place
//! how to run any of them, and its transactions check them the same way.

use std::future::Future;

use sea_orm::{ConnectionTrait, DbErr, ExecResult, QueryResult, Statement};

use crate::table_isolation::sqlite_rewrite;
use crate::{Error, TenantId};

/// What a statement goes through before it runs, fixed by the handle's route.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Check<'a> {
    /// Nothing: the database enforces the isolation (PostgreSQL).
    None,
    /// A SQLite tenant's own file: `ATTACH` and `DETACH` are refused.
    RefuseAttach(&'a TenantId),
    /// A table tenant on a SQLite master: the allowlist, and rewritten to its rows.
    Rewrite(&'a TenantId),
}

impl Check<'_> {
    /// `stmt` as the tenant may run it.
    pub(crate) fn statement(self, stmt: Statement) -> Result<Statement, DbErr> {
        match self {
            Check::None => Ok(stmt),
            Check::RefuseAttach(id) => {
                sqlite_rewrite::refuse_attach(&stmt.sql, id.as_str()).map_err(super::to_db_err)?;
                Ok(stmt)
            }
            Check::Rewrite(id) => {
                sqlite_rewrite::scope_statement(stmt, id.as_str(), &super::catalog()?).map_err(super::to_db_err)
            }
        }
    }
}

/// A call of [`ConnectionTrait`]: checked once, then run on whatever connection the
/// route gives (and again on a fresh pool after a stale cached plan, hence `Clone`).
pub(crate) trait Call: Clone + Send + Sync {
    type Output: Send;

    /// What the call is, for its span: `execute`, `query_one`, `query_all`, `unprepared`.
    const KIND: &'static str;

    /// The call as the tenant may make it.
    fn checked(self, check: Check<'_>) -> Result<Self, DbErr>;

    /// Runs it on `db`.
    fn run<C: ConnectionTrait + Sync>(self, db: &C) -> impl Future<Output = Result<Self::Output, DbErr>> + Send;

    /// Whether sqlx sends it as a prepared statement (a `Parse`, then a `Bind` in a second
    /// round trip), which behind a transaction-mode pooler must run inside a transaction
    /// (see [`super::pooler`]). SQL without values sent as it is goes in one round trip.
    fn prepared(&self) -> bool {
        true
    }
}

/// [`ConnectionTrait::execute_raw`].
#[derive(Clone, Debug)]
pub(crate) struct Execute(pub(crate) Statement);

/// [`ConnectionTrait::query_one_raw`].
#[derive(Clone, Debug)]
pub(crate) struct QueryOne(pub(crate) Statement);

/// [`ConnectionTrait::query_all_raw`].
#[derive(Clone, Debug)]
pub(crate) struct QueryAll(pub(crate) Statement);

/// [`ConnectionTrait::execute_unprepared`]: the SQL as given, or, once checked for a
/// table tenant on a SQLite master, the scoped statements it became.
#[derive(Clone, Debug)]
pub(crate) enum Unprepared<'a> {
    Sql(&'a str),
    Scoped(Vec<Statement>),
}

impl Call for Execute {
    const KIND: &'static str = "execute";

    type Output = ExecResult;

    fn checked(self, check: Check<'_>) -> Result<Self, DbErr> {
        check.statement(self.0).map(Execute)
    }

    fn run<C: ConnectionTrait + Sync>(self, db: &C) -> impl Future<Output = Result<ExecResult, DbErr>> + Send {
        db.execute_raw(self.0)
    }
}

impl Call for QueryOne {
    const KIND: &'static str = "query_one";

    type Output = Option<QueryResult>;

    fn checked(self, check: Check<'_>) -> Result<Self, DbErr> {
        check.statement(self.0).map(QueryOne)
    }

    fn run<C: ConnectionTrait + Sync>(self, db: &C) -> impl Future<Output = Result<Self::Output, DbErr>> + Send {
        db.query_one_raw(self.0)
    }
}

impl Call for QueryAll {
    const KIND: &'static str = "query_all";

    type Output = Vec<QueryResult>;

    fn checked(self, check: Check<'_>) -> Result<Self, DbErr> {
        check.statement(self.0).map(QueryAll)
    }

    fn run<C: ConnectionTrait + Sync>(self, db: &C) -> impl Future<Output = Result<Self::Output, DbErr>> + Send {
        db.query_all_raw(self.0)
    }
}

impl Call for Unprepared<'_> {
    const KIND: &'static str = "unprepared";

    type Output = ExecResult;

    fn prepared(&self) -> bool {
        matches!(self, Unprepared::Scoped(_))
    }

    fn checked(self, check: Check<'_>) -> Result<Self, DbErr> {
        let Unprepared::Sql(sql) = self else { return Ok(self) };
        match check {
            Check::None => Ok(self),
            Check::RefuseAttach(id) => {
                sqlite_rewrite::refuse_attach(sql, id.as_str()).map_err(super::to_db_err)?;
                Ok(self)
            }
            Check::Rewrite(id) => sqlite_rewrite::scope_unprepared(sql, id.as_str(), &super::catalog()?)
                .map(Unprepared::Scoped)
                .map_err(super::to_db_err),
        }
    }

    async fn run<C: ConnectionTrait + Sync>(self, db: &C) -> Result<ExecResult, DbErr> {
        match self {
            Unprepared::Sql(sql) => db.execute_unprepared(sql).await,
            // One after the other; the result of the last.
            Unprepared::Scoped(statements) => {
                let mut last = None;
                for stmt in statements {
                    last = Some(db.execute_raw(stmt).await?);
                }
                last.ok_or_else(|| DbErr::Custom("no statement to run".to_owned()))
            }
        }
    }
}

/// A `tenancy` error as the `DbErr` sea-orm's traits return: the driver's own error where
/// there is one, the message otherwise.
pub(crate) fn to_db_err(err: Error) -> DbErr {
    match err {
        Error::Database(err) | Error::CannotConnect { source: err, .. } => err,
        // Kept a connection error, with the message naming the server.
        err @ Error::ServerUnavailable { .. } => DbErr::Conn(sea_orm::RuntimeErr::Internal(err.to_string())),
        other => DbErr::Custom(other.to_string()),
    }
}
