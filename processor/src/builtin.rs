//! Handlers every processor can run without app code.

use tributary_common::store::{LifecycleStamp, TenantStore};

use crate::context::Context;
use crate::handler::{EventFilter, Handler, HandlerError};

/// Name of the built-in tenant-state handler (keys its handled-event records).
pub const TENANT_STATE: &str = "tributary.tenant_state";
/// Name of the built-in log handler (`processor_handlers = ["log"]`).
pub const LOG: &str = "tributary.log";

/// Keeps tenant status in step with lifecycle events. The ingest stored the tenant and its
/// secret when `installed` arrived (the event on Kafka carries no secret); here the status
/// is re-derived, which is idempotent, and `uninstalled` is sticky, so `disabled` and
/// `uninstalled` end the same in either order. Each event is applied with its own time and
/// id, and one older than what the tenant's status came from changes nothing: a processor
/// lagging behind the ingest (or reading lifecycle events from two topics) never sets a
/// reinstalled tenant back to `uninstalled`.
pub fn tenant_state(tenants: TenantStore) -> (EventFilter, impl Handler) {
    let handler = move |ctx: Context| {
        let tenants = tenants.clone();
        async move {
            let event = ctx.event();
            let Some(lifecycle) = event.lifecycle() else {
                return Ok(());
            };
            let tenant = tenants
                .apply_lifecycle_at(
                    event.client_key(),
                    lifecycle,
                    &LifecycleStamp::new(event.time(), event.id()),
                )
                .await
                .map_err(HandlerError::from)?;
            match tenant {
                Some(t) => {
                    tracing::info!(client_key = %t.client_key, status = %t.status, "tenant status")
                }
                None => tracing::warn!(
                    client_key = event.client_key(),
                    event = event.name(),
                    "lifecycle event for an unknown tenant"
                ),
            }
            Ok(())
        }
    };
    (EventFilter::Lifecycle, handler)
}

/// Logs every event it sees.
pub fn log() -> (EventFilter, impl Handler) {
    let handler = |ctx: Context| async move {
        let event = ctx.event();
        let origin = event.origin();
        tracing::info!(
            event_id = event.id(),
            event = event.name(),
            client_key = event.client_key(),
            subject = event.subject(),
            topic = %origin.topic,
            partition = origin.partition,
            offset = origin.offset,
            "event"
        );
        Ok(())
    };
    (EventFilter::Pattern("*".into()), handler)
}
