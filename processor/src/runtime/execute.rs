//! What running a handler takes, and one record on its own from start to finish: decode,
//! run each subscribed handler with retries, and dead-letter what cannot be handled.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use futures::FutureExt;
use rdkafka::Message;
use rdkafka::message::OwnedMessage;
use tributary_common::kafka::envelope_from_message;
use tributary_common::shutdown::Shutdown;
use tributary_common::store::{
    Database, ForgeStore, HandledEvent, HandlerRun, HandlerStore, StateWrites,
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
use crate::tenants::{CachedTenant, TenantCache};

/// Label for records whose event type cannot be read.
pub(crate) const UNKNOWN_EVENT: &str = "unknown";

/// Everything the workers share.
pub(crate) struct Shared {
    pub db: Database,
    pub tenants: TenantCache,
    pub forge: ForgeStore,
    pub handled: HandlerStore,
    pub confluence: ConfluenceClients,
    pub subscriptions: Vec<Subscription>,
    /// The subscriptions' names, shared with each context rather than copied.
    pub names: Vec<Arc<str>>,
    /// Each subscription's duration histogram, taken once the metrics recorder is set up
    /// rather than looked up by label on every run.
    pub durations: OnceLock<Vec<metrics::Histogram>>,
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

/// Where an event's handling continues after its batch gave it up: handlers before
/// `subscription` are done (their records committed with the batch), and `subscription`
/// failed transiently `attempts` times, last with `error`.
#[derive(Debug, Clone)]
pub(crate) struct Resume {
    pub subscription: usize,
    pub attempts: u32,
    pub error: HandlerError,
}

/// The event in a record, or why the record is not one.
pub(crate) fn decode(message: &OwnedMessage) -> Result<Event, String> {
    let origin = Origin {
        topic: message.topic().to_string(),
        partition: message.partition(),
        offset: message.offset(),
    };
    envelope_from_message(message)
        .map_err(|e| format!("not an event envelope: {e}"))
        .and_then(|envelope| {
            Event::new(envelope, origin).map_err(|e| format!("body is not JSON: {e}"))
        })
}

/// Handles one record on its own, each handler's run committed by itself: the path of
/// events whose handler is being retried, and of what waits behind them on their key.
pub(crate) async fn process(
    shared: &Shared,
    message: &OwnedMessage,
    resume: Option<Resume>,
) -> JobOutcome {
    let event = match decode(message) {
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
    for (index, subscription) in shared.subscriptions.iter().enumerate() {
        if !subscription.filter.matches(event.kind()) {
            continue;
        }
        let prior = match &resume {
            Some(resume) if index < resume.subscription => continue,
            Some(resume) if index == resume.subscription => Some(resume),
            _ => None,
        };
        match run_handler(shared, index, &event, prior).await {
            Ok(outcome) => observe::handled(event.name(), outcome),
            // Retries stopped because the consumer is stopping: leave it for redelivery.
            Err((error, _)) if error.is_transient() && shared.stopping.is_cancelled() => {
                return JobOutcome::Abandoned;
            }
            Err((error, attempts)) => {
                return give_up(shared, message, &event, index, &error, attempts).await;
            }
        }
    }
    if event.lifecycle().is_some() {
        shared.tenants.invalidate(event.client_key()).await;
    }
    observe::end_to_end(event.time());
    shared
        .guard
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .record(false);
    JobOutcome::Finished
}

/// Dead-letters an event whose handler `index` failed for good.
pub(crate) async fn give_up(
    shared: &Shared,
    message: &OwnedMessage,
    event: &Event,
    index: usize,
    error: &HandlerError,
    attempts: u32,
) -> JobOutcome {
    let subscription = &shared.subscriptions[index];
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
    dead_letter(shared, message, event.name(), &letter).await
}

/// How long one database check may take.
const DATABASE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) async fn database_down(shared: &Shared) -> bool {
    !matches!(
        tokio::time::timeout(DATABASE_PROBE_TIMEOUT, shared.db.ping()).await,
        Ok(Ok(()))
    )
}

/// Waits until the database answers (true) or the consumer stops (false).
pub(crate) async fn wait_for_database(shared: &Shared) -> bool {
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

/// Runs handler `index` on one event, retrying transient failures (continuing from
/// `prior` attempts made elsewhere); the error and the number of attempts made when it
/// gives up.
async fn run_handler(
    shared: &Shared,
    index: usize,
    event: &Arc<Event>,
    prior: Option<&Resume>,
) -> Result<Outcome, (HandlerError, u32)> {
    let subscription = &shared.subscriptions[index];
    let mut delays = shared.retry.delays();
    let mut attempts = 0;
    let mut failed = None;
    if let Some(prior) = prior {
        attempts = prior.attempts;
        for _ in 1..attempts {
            delays.next();
        }
        failed = Some(prior.error.clone());
    }
    loop {
        if let Some(error) = failed.take() {
            if !error.is_transient() || shared.stopping.is_cancelled() {
                return Err((error, attempts));
            }
            let Some(delay) = delays.next() else {
                return Err((error, attempts));
            };
            metrics::counter!(HANDLER_RETRIES, "handler" => subscription.name.clone()).increment(1);
            tracing::info!(
                event_id = event.id(), handler = %subscription.name, %error,
                retry_in_ms = delay.as_millis() as u64, "handler failed transiently"
            );
            tokio::time::sleep(delay).await;
        }
        attempts += 1;
        match attempt_once(shared, index, event, attempts).await {
            Ok(outcome) => return Ok(outcome),
            // An outage of the runtime's own database is not the event's fault: the
            // attempt does not count, and the event waits until the database is back.
            Err(error)
                if error.is_transient()
                    && !shared.stopping.is_cancelled()
                    && database_down(shared).await =>
            {
                attempts -= 1;
                tracing::warn!(
                    event_id = event.id(), handler = %subscription.name, %error,
                    "the database is unreachable: pausing until it is back"
                );
                if !wait_for_database(shared).await {
                    return Err((error, attempts));
                }
            }
            Err(error) => {
                observe::handled(event.name(), Outcome::Failure);
                failed = Some(error);
            }
        }
    }
}

/// Takes each subscription's duration histogram, once the metrics recorder is installed.
pub(crate) fn take_instruments(shared: &Shared) {
    let _ = shared.durations.set(
        shared
            .subscriptions
            .iter()
            .map(|s| metrics::histogram!(HANDLER_DURATION, "handler" => s.name.clone()))
            .collect(),
    );
}

/// The tenant of `event` for a handler: lifecycle events change their tenant, so they
/// always read the store.
pub(crate) async fn tenant_for(
    shared: &Shared,
    event: &Event,
) -> Result<Option<Arc<CachedTenant>>, HandlerError> {
    Ok(if event.lifecycle().is_some() {
        shared.tenants.load(event.client_key()).await?
    } else {
        shared.tenants.get(event.client_key()).await?
    })
}

/// Runs handler `index` once on `event` and returns its staged state writes; nothing is
/// committed.
pub(crate) async fn run_once(
    shared: &Shared,
    index: usize,
    event: &Arc<Event>,
    attempt: u32,
    tenant: Option<Arc<CachedTenant>>,
    earlier: Option<Arc<StateWrites>>,
) -> Result<StateWrites, HandlerError> {
    let subscription = &shared.subscriptions[index];
    // A Forge identity is looked up only where it may be needed: a tenant without a
    // Connect identity, or an event Forge sent.
    let forge = if tenant.is_none() || event.source() == EventSource::Forge {
        shared.forge.for_tenant(event.client_key()).await?
    } else {
        None
    };
    let state = TenantState::over(shared.handled.clone(), event.client_key(), earlier);
    let ctx = Context::new(ContextParts {
        event: event.clone(),
        handler: shared.names[index].clone(),
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
    let elapsed = started.elapsed().as_secs_f64();
    match shared.durations.get().and_then(|all| all.get(index)) {
        Some(histogram) => histogram.record(elapsed),
        None => metrics::histogram!(HANDLER_DURATION, "handler" => subscription.name.clone())
            .record(elapsed),
    }
    result?;
    Ok(state.take_writes())
}

/// The handled-event record of handler `index` on `event`.
pub(crate) fn record_of<'a>(
    shared: &'a Shared,
    index: usize,
    event: &'a Event,
) -> HandledEvent<'a> {
    let origin = event.origin();
    HandledEvent {
        handler: &shared.subscriptions[index].name,
        event_id: event.id(),
        client_key: event.client_key(),
        event_type: event.name(),
        topic: &origin.topic,
        partition: origin.partition,
        offset: origin.offset,
    }
}

async fn attempt_once(
    shared: &Shared,
    index: usize,
    event: &Arc<Event>,
    attempt: u32,
) -> Result<Outcome, HandlerError> {
    let name = &shared.subscriptions[index].name;
    if shared.handled.is_handled(name, event.id()).await? {
        return Ok(Outcome::Duplicate);
    }
    let tenant = tenant_for(shared, event).await?;
    let writes = run_once(shared, index, event, attempt, tenant, None).await?;
    let run = HandlerRun {
        event: record_of(shared, index, event),
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
pub(crate) async fn dead_letter(
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
