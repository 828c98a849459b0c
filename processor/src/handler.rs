//! Handlers, their errors and their subscriptions.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tributary_common::envelope::EventKind;
use tributary_common::routing::wildcard_match;
use tributary_common::store::StoreError;

use crate::confluence::ConfluenceError;
use crate::context::Context;
use crate::state::StateError;

pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send>>;

/// Business logic for one kind of event. Any `Fn(Context) -> impl Future<Output =
/// Result<(), HandlerError>>` is a handler, so async functions and closures work as they are.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, ctx: Context) -> HandlerFuture;
}

impl<F, Fut> Handler for F
where
    F: Fn(Context) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    fn handle(&self, ctx: Context) -> HandlerFuture {
        Box::pin(self(ctx))
    }
}

/// Why a handler failed, and so what the runtime does next: a transient failure is retried
/// with backoff, a permanent one sends the event to the dead-letter topic at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    #[error("transient: {0}")]
    Transient(String),
    #[error("permanent: {0}")]
    Permanent(String),
}

impl HandlerError {
    pub fn transient(error: impl std::fmt::Display) -> Self {
        HandlerError::Transient(error.to_string())
    }

    pub fn permanent(error: impl std::fmt::Display) -> Self {
        HandlerError::Permanent(error.to_string())
    }

    pub fn is_transient(&self) -> bool {
        matches!(self, HandlerError::Transient(_))
    }

    /// Transient or permanent as the failure itself says.
    fn classified(error: impl std::fmt::Display, transient: bool) -> Self {
        if transient {
            HandlerError::transient(error)
        } else {
            HandlerError::permanent(error)
        }
    }
}

impl From<ConfluenceError> for HandlerError {
    fn from(error: ConfluenceError) -> Self {
        let transient = error.is_transient();
        HandlerError::classified(error, transient)
    }
}

/// A database that did not answer may answer next time; a corrupt row or a secret that does
/// not decrypt will not.
impl From<StoreError> for HandlerError {
    fn from(error: StoreError) -> Self {
        let transient = error.is_transient();
        HandlerError::classified(error, transient)
    }
}

impl From<StateError> for HandlerError {
    fn from(error: StateError) -> Self {
        let transient = matches!(&error, StateError::Store(store) if store.is_transient());
        HandlerError::classified(error, transient)
    }
}

/// Which events a handler receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventFilter {
    /// Event names with `*` wildcards: `page_created`, `page_*`, `*`. A Forge event matches
    /// by its Connect counterpart's name and by its own (`avi:confluence:created:page`).
    Pattern(String),
    /// The four lifecycle callbacks.
    Lifecycle,
}

impl EventFilter {
    pub fn matches(&self, kind: &EventKind) -> bool {
        match self {
            EventFilter::Pattern(pattern) => {
                wildcard_match(pattern, kind.name())
                    || kind
                        .forge_name()
                        .is_some_and(|name| wildcard_match(pattern, name))
            }
            EventFilter::Lifecycle => matches!(kind, EventKind::Lifecycle(_)),
        }
    }
}

/// A registered handler. Its name keys the handled-event records, so it must stay the same
/// across deployments for redelivered events to be recognised.
#[derive(Clone)]
pub struct Subscription {
    pub name: String,
    pub filter: EventFilter,
    pub handler: Arc<dyn Handler>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("name", &self.name)
            .field("filter", &self.filter)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_common::connect::LifecycleEventType;

    #[test]
    fn filters() {
        let page = EventKind::Webhook("page_created".into());
        let installed = EventKind::Lifecycle(LifecycleEventType::Installed);
        assert!(EventFilter::Pattern("page_*".into()).matches(&page));
        assert!(EventFilter::Pattern("page_created".into()).matches(&page));
        assert!(!EventFilter::Pattern("blog_*".into()).matches(&page));
        assert!(EventFilter::Lifecycle.matches(&installed));
        assert!(!EventFilter::Lifecycle.matches(&page));
        assert!(EventFilter::Pattern("installed".into()).matches(&installed));
    }

    #[test]
    fn forge_events_match_their_connect_name_and_their_own() {
        let forge = EventKind::Forge("avi:confluence:created:page".into());
        assert!(EventFilter::Pattern("page_created".into()).matches(&forge));
        assert!(EventFilter::Pattern("page_*".into()).matches(&forge));
        assert!(EventFilter::Pattern("avi:confluence:created:page".into()).matches(&forge));
        assert!(EventFilter::Pattern("avi:confluence:*".into()).matches(&forge));
        assert!(!EventFilter::Pattern("blog_created".into()).matches(&forge));
        assert!(!EventFilter::Lifecycle.matches(&forge));
        let liked = EventKind::Forge("avi:confluence:liked:page".into());
        assert!(EventFilter::Pattern("avi:confluence:liked:page".into()).matches(&liked));
        assert!(!EventFilter::Pattern("page_*".into()).matches(&liked));
    }
}
