//! One record from start to finish: decode, run each subscribed handler with retries, and
//! dead-letter what cannot be handled.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use futures::FutureExt;
use rdkafka::Message;
use rdkafka::message::OwnedMessage;
use tributary_common::kafka::envelope_from_message;
use tributary_common::shutdown::Shutdown;
use tributary_common::store::{
    Database, ForgeStore, HandledEvent, HandlerRun, HandlerStore, TenantStore,
};

use super::guard::FailureGuard;
use crate::backoff::BackoffSchedule;
use crate::confluence::ConfluenceClients;
use crate::context::{Context, ContextParts};
use crate::dlq::{DeadLetterWriter, Letter, Reason};
use crate::event::{Event, EventSource, Origin};
use crate::handler::{HandlerError, Subscription};
use crate::observe::{self, DEAD_LETTERED, HANDLER_DURATION, HANDLER_RETRIES, Outcome};
use crate::state::TenantState;

/// Label for records whose event type cannot be read.
const UNKNOWN_EVENT: &str = "unknown";

/// Everything the workers share.
pub(crate) struct Shared {
    pub db: Database,
    pub tenants: TenantStore,
    pub forge: ForgeStore,
    pub handled: HandlerStore,
    pub confluence: ConfluenceClients,
    pub subscriptions: Vec<Subscription>,
    pub dead_letters: DeadLetterWriter,
    pub guard: Mutex<FailureGuard>,
    /// How a transiently failing handler is retried.
    pub retry: BackoffSchedule,
    /// Cancelled when the consumer stops: no new retries, no waiting for the broker.
    pub stopping: Shutdown,
}

/// How a record ended for the consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobOutcome {
    /// Handled, skipped as a duplicate, or dead-lettered: its offset may be committed.
    Finished,
    /// Given up because the consumer is stopping; it will be delivered again.
    Abandoned,
    /// The failure guard tripped; the record was not dead-lettered.
    GuardTripped,
}

pub(crate) async fn process(shared: &Shared, message: &OwnedMessage) -> JobOutcome {
    let origin = Origin {
        topic: message.topic().to_string(),
        partition: message.partition(),
        offset: message.offset(),
    };
    let decoded = envelope_from_message(message)
        .map_err(|e| format!("not an event envelope: {e}"))
        .and_then(|envelope| {
            Event::new(envelope, origin).map_err(|e| format!("body is not JSON: {e}"))
        });
    let event = match decoded {
        Ok(event) => Arc::new(event),
        Err(error) => {
            let letter = Letter {
                reason: Reason::Undecodable,
                handler: "-",
                error: &error,
                attempts: 0,
            };
            return dead_letter(shared, message, UNKNOWN_EVENT, &letter).await;
        }
    };
    for subscription in shared
        .subscriptions
        .iter()
        .filter(|s| s.filter.matches(event.kind()))
    {
        match run_handler(shared, subscription, &event).await {
            Ok(outcome) => observe::handled(event.name(), outcome),
            // Retries stopped because the consumer is stopping: leave it for redelivery.
            Err((error, _)) if error.is_transient() && shared.stopping.is_cancelled() => {
                return JobOutcome::Abandoned;
            }
            Err((error, attempts)) => {
                let reason = if error.is_transient() {
                    Reason::Handler
                } else {
                    Reason::Permanent
                };
                tracing::warn!(
                    event_id = event.id(), event = event.name(), handler = %subscription.name,
                    attempts, %error, "handler failed: dead-lettering the event"
                );
                let error = error.to_string();
                let letter = Letter {
                    reason,
                    handler: &subscription.name,
                    error: &error,
                    attempts,
                };
                return dead_letter(shared, message, event.name(), &letter).await;
            }
        }
    }
    observe::end_to_end(event.time());
    shared
        .guard
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .record(false);
    JobOutcome::Finished
}

/// How long one database check may take.
const DATABASE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

async fn database_down(shared: &Shared) -> bool {
    !matches!(
        tokio::time::timeout(DATABASE_PROBE_TIMEOUT, shared.db.ping()).await,
        Ok(Ok(()))
    )
}

/// Waits until the database answers (true) or the consumer stops (false).
async fn wait_for_database(shared: &Shared) -> bool {
    let mut delay = Duration::from_millis(200);
    loop {
        tokio::select! {
            _ = shared.stopping.cancelled() => return false,
            _ = tokio::time::sleep(delay) => {}
        }
        if !database_down(shared).await {
            return true;
        }
        delay = (delay * 2).min(shared.retry.max_delay.max(Duration::from_millis(200)));
    }
}

/// Runs one handler on one event, retrying transient failures; the error and the number
/// of attempts made when it gives up.
async fn run_handler(
    shared: &Shared,
    subscription: &Subscription,
    event: &Arc<Event>,
) -> Result<Outcome, (HandlerError, u32)> {
    let attempts = AtomicU32::new(0);
    let attempt = || async {
        loop {
            let n = attempts.fetch_add(1, Ordering::SeqCst) + 1;
            let result = attempt_once(shared, subscription, event, n).await;
            match &result {
                // An outage of the runtime's own database is not the event's fault: the
                // attempt does not count, and the event waits until the database is back.
                Err(error)
                    if error.is_transient()
                        && !shared.stopping.is_cancelled()
                        && database_down(shared).await =>
                {
                    attempts.fetch_sub(1, Ordering::SeqCst);
                    tracing::warn!(
                        event_id = event.id(), handler = %subscription.name, %error,
                        "the database is unreachable: pausing until it is back"
                    );
                    if !wait_for_database(shared).await {
                        return result;
                    }
                }
                Err(_) => {
                    observe::handled(event.name(), Outcome::Failure);
                    return result;
                }
                Ok(_) => return result,
            }
        }
    };
    attempt
        .retry(shared.retry.delays())
        .sleep(tokio::time::sleep)
        .when(|error: &HandlerError| error.is_transient() && !shared.stopping.is_cancelled())
        .notify(|error: &HandlerError, delay: Duration| {
            metrics::counter!(HANDLER_RETRIES, "handler" => subscription.name.clone()).increment(1);
            tracing::info!(
                event_id = event.id(), handler = %subscription.name, %error,
                retry_in_ms = delay.as_millis() as u64, "handler failed transiently"
            );
        })
        .await
        .map_err(|error| (error, attempts.load(Ordering::SeqCst)))
}

async fn attempt_once(
    shared: &Shared,
    subscription: &Subscription,
    event: &Arc<Event>,
    attempt: u32,
) -> Result<Outcome, HandlerError> {
    if shared
        .handled
        .is_handled(&subscription.name, event.id())
        .await?
    {
        return Ok(Outcome::Duplicate);
    }
    let tenant = shared.tenants.get_with_secret(event.client_key()).await?;
    // A Forge identity is looked up only where it may be needed: a tenant without a
    // Connect identity, or an event Forge sent.
    let forge = if tenant.is_none() || event.source() == EventSource::Forge {
        shared.forge.for_tenant(event.client_key()).await?
    } else {
        None
    };
    let state = TenantState::new(shared.handled.clone(), event.client_key());
    let ctx = Context::new(ContextParts {
        event: event.clone(),
        handler: subscription.name.clone(),
        attempt,
        tenant,
        forge,
        state: state.clone(),
        confluence: shared.confluence.clone(),
    });
    let started = Instant::now();
    let handler = subscription.handler.clone();
    // A panicking handler is a failed handler, not a stuck partition.
    let result = AssertUnwindSafe(async move { handler.handle(ctx).await })
        .catch_unwind()
        .await
        .unwrap_or_else(|_| Err(HandlerError::permanent("handler panicked")));
    metrics::histogram!(HANDLER_DURATION, "handler" => subscription.name.clone())
        .record(started.elapsed().as_secs_f64());
    result?;
    let writes = state.take_writes();
    let origin = event.origin();
    let run = HandlerRun {
        event: HandledEvent {
            handler: &subscription.name,
            event_id: event.id(),
            client_key: event.client_key(),
            event_type: event.name(),
            topic: &origin.topic,
            partition: origin.partition,
            offset: origin.offset,
        },
        writes: &writes,
    };
    let recorded = shared.handled.commit(&[run]).await?;
    Ok(if recorded.first() == Some(&true) {
        Outcome::Success
    } else {
        Outcome::Duplicate
    })
}

/// Writes `message` to the dead-letter topic, trying until the broker takes it or the
/// consumer stops (the shutdown deadline cuts a last attempt short); refuses when the
/// failure guard trips.
async fn dead_letter(
    shared: &Shared,
    message: &OwnedMessage,
    event_name: &str,
    letter: &Letter<'_>,
) -> JobOutcome {
    let tripped = shared
        .guard
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .record(true);
    if tripped {
        return JobOutcome::GuardTripped;
    }
    let write = || shared.dead_letters.write(message, letter);
    let written = write
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_secs(10))
                .without_max_times()
                .with_jitter(),
        )
        .sleep(tokio::time::sleep)
        .when(|_| !shared.stopping.is_cancelled())
        .notify(|error, delay| {
            tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "dead-letter write failed");
        });
    match written.await {
        Ok(()) => {
            metrics::counter!(DEAD_LETTERED, "topic" => message.topic().to_string(), "reason" => letter.reason.as_str())
                .increment(1);
            observe::handled(event_name, Outcome::DeadLettered);
            JobOutcome::Finished
        }
        Err(_) => JobOutcome::Abandoned,
    }
}
