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
}

impl StoreError {
    /// True when trying again later may succeed: the database did not answer or refused
    /// the statement. Everything else (a corrupt row, a secret that does not decrypt) stays
    /// wrong until someone fixes it.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Database(_))
    }
}
