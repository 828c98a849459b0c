//! What a handler gets besides the event: the tenant, its state and a Confluence client.

use std::sync::Arc;

use tributary_common::store::{ForgeInstallation, Tenant};

use crate::backoff::RetryBudget;
use crate::confluence::{ConfluenceClient, ConfluenceClients, WriteKey};
use crate::event::Event;
use crate::handler::HandlerError;
use crate::state::TenantState;
use crate::tenants::{CachedTenant, ForgeIdentity};

/// A handler's view of one attempt at one event. Cheap to clone.
#[derive(Clone)]
pub struct Context {
    inner: Arc<Inner>,
}

struct Inner {
    event: Arc<Event>,
    handler: Arc<str>,
    attempt: u32,
    /// The tenant and its secret; the secret is only ever handed to the Confluence client,
    /// never to the handler.
    tenant: Option<Arc<CachedTenant>>,
    /// The tenant's Forge installation and its app system token (never handed out).
    forge: Option<Arc<ForgeIdentity>>,
    state: TenantState,
    confluence: ConfluenceClients,
    /// The event's retries, shared by this run's Confluence requests and the runtime.
    budget: Arc<RetryBudget>,
    /// Shared by every client this attempt makes, so their writes are numbered as one run.
    writes: WriteKey,
}

pub(crate) struct ContextParts {
    pub event: Arc<Event>,
    pub handler: Arc<str>,
    pub attempt: u32,
    pub tenant: Option<Arc<CachedTenant>>,
    pub forge: Option<Arc<ForgeIdentity>>,
    pub state: TenantState,
    pub confluence: ConfluenceClients,
    pub budget: Arc<RetryBudget>,
}

impl Context {
    pub(crate) fn new(parts: ContextParts) -> Context {
        let writes = WriteKey::new(parts.handler.clone(), parts.event.id(), parts.attempt)
            .replayed(parts.event.is_replay());
        Context {
            inner: Arc::new(Inner {
                writes,
                event: parts.event,
                handler: parts.handler,
                attempt: parts.attempt,
                tenant: parts.tenant,
                forge: parts.forge,
                state: parts.state,
                confluence: parts.confluence,
                budget: parts.budget,
            }),
        }
    }

    pub fn event(&self) -> &Event {
        &self.inner.event
    }

    /// The event's tenant, without its secret; `None` for a tenant the store does not know.
    pub fn tenant(&self) -> Option<&Tenant> {
        self.inner.tenant.as_ref().map(|cached| &cached.tenant)
    }

    /// The tenant's Forge installation, when it has one (linked to its Connect identity,
    /// or on its own for a Forge-only site); never its token.
    pub fn forge_installation(&self) -> Option<&ForgeInstallation> {
        self.inner
            .forge
            .as_deref()
            .map(|identity| &identity.installation)
    }

    /// The name of the handler running.
    pub fn handler_name(&self) -> &str {
        &self.inner.handler
    }

    /// 1 on the first attempt, 2 on the first retry, ...
    pub fn attempt(&self) -> u32 {
        self.inner.attempt
    }

    /// The tenant's key-value state. Writes commit together with the record that this
    /// handler handled this event, so they happen once however often the event arrives.
    pub fn state(&self) -> &TenantState {
        &self.inner.state
    }

    /// A Confluence REST client for the event's tenant, acting as the app: signed with the
    /// Connect shared secret when the tenant has a Connect identity, otherwise through its
    /// Forge installation's API base URL with the app system token. Its built-in writes
    /// are keyed by this handler and event, so a retry does not make them twice.
    pub fn confluence(&self) -> Result<ConfluenceClient, HandlerError> {
        if let Some(cached) = &self.inner.tenant {
            return Ok(self
                .inner
                .confluence
                .for_tenant(&cached.tenant, cached.secret.clone())?
                .with_budget(self.inner.budget.clone())
                .for_event(&self.inner.writes));
        }
        if let Some(identity) = &self.inner.forge {
            return Ok(self
                .inner
                .confluence
                .for_forge(&identity.installation, identity.token.clone())?
                .with_budget(self.inner.budget.clone())
                .for_event(&self.inner.writes));
        }
        Err(HandlerError::permanent(format!(
            "tenant {} is not installed",
            self.inner.event.client_key()
        )))
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("event", &self.inner.event.id())
            .field("handler", &self.inner.handler)
            .field("attempt", &self.inner.attempt)
            .field(
                "tenant",
                &self.inner.tenant.as_ref().map(|t| &t.tenant.client_key),
            )
            .finish_non_exhaustive()
    }
}
