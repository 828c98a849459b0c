//! Why a store operation failed.

use crate::crypto::KeyError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("tenant secret: {0}")]
    Secret(#[from] KeyError),
    #[error("an installed callback must carry a sharedSecret")]
    MissingSecret,
    #[error("stored row is invalid: {0}")]
    CorruptRow(String),
    #[error("the tenant is already installed")]
    AlreadyInstalled,
}

impl StoreError {
    /// True when trying again later may succeed: the database did not answer or refused
    /// the statement. Everything else (a corrupt row, a secret that does not decrypt) stays
    /// wrong until someone fixes it.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Database(_)) && !self.is_caused_by_input()
    }

    /// True when the database refused a value the caller supplied (a NUL byte, a string it
    /// cannot encode or store: SQLSTATE class 22, "data exception"). Such a failure is the
    /// request's fault, not an outage, and must never be answered or alerted on as one.
    pub fn is_caused_by_input(&self) -> bool {
        match self {
            StoreError::MissingSecret => true,
            StoreError::Database(sqlx::Error::Database(err)) => {
                err.code().is_some_and(|code| code.starts_with("22"))
            }
            // sqlx refuses some values before they reach the server.
            StoreError::Database(sqlx::Error::Encode(_)) => true,
            _ => false,
        }
    }
}
