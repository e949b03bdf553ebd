//! The app's one error type: what a request can fail with (answered as JSON with its
//! status code) and what stops `serve` from starting (reported with an exit code).

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use sea_orm::DbErr;

/// An error of the example app.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The tenant has no row of this kind with this id (another tenant's row included:
    /// a tenant cannot tell it from a missing one). `404 Not Found`.
    #[error("{what} {id} not found")]
    NotFound {
        /// What was looked for: `project`, `task`.
        what: &'static str,
        /// The id in the request's path.
        id: i32,
    },
    /// A relational endpoint was called for a cache-isolated tenant, which has no tables.
    /// `409 Conflict`: the request is fine, the tenant's isolation mode cannot serve it.
    #[error(
        "tenant '{tenant}' uses cache isolation and has no relational storage: \
         only GET /tenant and the /notes endpoints are served for it"
    )]
    NoRelationalStorage {
        /// The tenant's id.
        tenant: String,
    },
    /// The tenant has no note under this key (another tenant's included). `404 Not Found`.
    #[error("note '{key}' not found")]
    NoteNotFound {
        /// The note's key.
        key: String,
    },
    /// A field of the request body is out of bounds. `422 Unprocessable Entity`.

    #[error("invalid {field}: {reason}")]
    InvalidField {
        /// The JSON field.
        field: &'static str,
        /// What is valid.
        reason: &'static str,
    },
    /// The request body is not the JSON the endpoint takes (axum's status: 400, 415 or 422).
    #[error("{}", .0.body_text())]
    Json(#[from] JsonRejection),
    /// A path parameter is not what the route takes, such as a project id that is not a
    /// number (axum's status, 400).
    #[error("{}", .0.body_text())]
    Path(#[from] PathRejection),
    /// A database call failed. `500 Internal Server Error`; the client sees no detail,
    /// the server's stderr does.
    #[error("database error")]
    Database(#[from] DbErr),
    /// `serve` cannot listen on the address (in use, not local, no permission).
    #[error("cannot listen on {addr}")]
    Bind {
        /// The `--bind` address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The server stopped on an I/O error.
    #[error("the server stopped")]
    Serve(#[source] std::io::Error),
    /// The master database cannot be used (unreachable, bad URL, registry unreadable).
    #[error(transparent)]
    Tenancy(#[from] tenancy::Error),
}

impl Error {
    /// The HTTP status a request failing with this error gets.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::NotFound { .. } | Error::NoteNotFound { .. } => StatusCode::NOT_FOUND,
            Error::NoRelationalStorage { .. } => StatusCode::CONFLICT,
            Error::InvalidField { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Error::Json(rejection) => rejection.status(),
            Error::Path(rejection) => rejection.status(),
            Error::Database(_) | Error::Bind { .. } | Error::Serve(_) | Error::Tenancy(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }
}

/// The body of every error response: `{"error": "<message>"}`.
#[derive(Debug, serde::Serialize)]
struct ErrorBody {
    error: String,
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            // The detail may name tables or servers: it goes to the operator, not the client.
            eprintln!("error: {self}: {}", source_chain(&self));
        }
        (status, Json(ErrorBody { error: self.to_string() })).into_response()
    }
}

/// The causes of `err`, joined with `: `.
pub(crate) fn source_chain(err: &dyn std::error::Error) -> String {
    let mut causes = Vec::new();
    let mut source = err.source();
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    causes.join(": ")
}
