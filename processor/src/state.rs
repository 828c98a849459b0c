//! Per-tenant key-value state, as a handler sees it.
//!
//! A handler's writes are staged in its context; the runtime commits them through the
//! store's [`HandlerStore::commit`] in the same transaction that records the (handler,
//! event) pair as handled, so each event changes a handler's state exactly once.

use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tributary_common::store::{HandlerStore, StateWrites, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state store: {0}")]
    Store(#[from] StoreError),
    #[error("state value is not the expected JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// One tenant's key-value state: reads see the handler's own staged writes, then the
/// writes of earlier events of the same batch (staged, committed with the batch), then what
/// is committed.
#[derive(Clone)]
pub struct TenantState {
    store: HandlerStore,
    client_key: String,
    writes: Arc<Mutex<StateWrites>>,
    earlier: Option<Arc<StateWrites>>,
}

impl TenantState {
    /// A state whose reads see `earlier` (writes not committed yet) over the store.
    pub(crate) fn over(
        store: HandlerStore,
        client_key: &str,
        earlier: Option<Arc<StateWrites>>,
    ) -> Self {
        TenantState {
            store,
            client_key: client_key.to_string(),
            writes: Arc::default(),
            earlier,
        }
    }

    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StateError> {
        let staged = self
            .writes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .map(|value| value.cloned())
            .or_else(|| {
                self.earlier
                    .as_ref()
                    .and_then(|earlier| earlier.get(key))
                    .map(|value| value.cloned())
            });
        let value = match staged {
            Some(value) => value,
            None => self.store.state(&self.client_key, key).await?,
        };
        Ok(value.map(serde_json::from_value).transpose()?)
    }

    /// Stages `value` under `key`; it is stored when the handler succeeds.
    pub fn set<T: Serialize>(&self, key: &str, value: &T) -> Result<(), StateError> {
        let value = serde_json::to_value(value)?;
        self.staged().set(key, value);
        Ok(())
    }

    /// Stages the removal of `key`.
    pub fn delete(&self, key: &str) {
        self.staged().delete(key);
    }

    fn staged(&self) -> std::sync::MutexGuard<'_, StateWrites> {
        self.writes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The staged writes, for the runtime to commit; the state starts empty again.
    pub(crate) fn take_writes(&self) -> StateWrites {
        std::mem::take(&mut *self.staged())
    }
}

#[cfg(test)]
mod tests;
