//! What running a handler takes, and one record on its own from start to finish: decode,
//! run each subscribed handler with retries, and dead-letter what cannot be handled.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use futures::FutureExt;
use rdkafka::message::Headers as _;
use tributary_common::envelope::Envelope;
use tributary_common::shutdown::Shutdown;
use tributary_common::store::{
    Database, HandledEvent, HandlerRun, HandlerStore, ParkedStore, StateWrites,
};

use super::guard::FailureGuard;
use super::parking;
use super::record::Record;
use crate::backoff::{BackoffSchedule, RetryBudget};
use crate::confluence::ConfluenceClients;
use crate::context::{Context, ContextParts};
use crate::dlq::{DeadLetterWriter, Letter, Reason};
use crate::event::{Event, EventSource, Origin};
use crate::handler::{HandlerError, Subscription};
use crate::observe::{
    self, BUDGET_EXHAUSTED, DEAD_LETTERED, EVENTS_PARKED, HANDLER_DURATION, HANDLER_RETRIES,
    Outcome,
};
use crate::state::TenantState;
use crate::tenants::{CachedTenant, TenantCache};

/// Label for records whose event type cannot be read.
pub(crate) const UNKNOWN_EVENT: &str = "unknown";

/// Everything the workers share.
pub(crate) struct Shared {
    pub db: Database,
    pub tenants: TenantCache,
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
    /// Retries due later than this park the event instead of holding a worker.
    pub park_after: Duration,
    pub parked: ParkedStore,
    /// Cancelled when the consumer stops: no new retries, no waiting for the broker.
    pub stopping: Shutdown,
}

/// How a record ended for the consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobOutcome {
    /// Handled, skipped as a duplicate, or dead-lettered: its offset may be committed.
    Finished,
    /// Parked in the database until its retry is due (Unix milliseconds): its offset may be
    /// committed, and the tenant's later events wait behind it.
    Parked { due_at_ms: i64 },
    /// Given up because the consumer is stopping; it will be delivered again.
    Abandoned,
    /// The failure guard tripped; the record was not dead-lettered.
    GuardTripped,
}

/// Where an event's handling continues after its batch gave it up (or its parked retry
/// came due): handlers before `subscription` are done (their records committed), and
/// `subscription` ran `attempts` times, last failing with `error`.
#[derive(Debug, Clone)]
pub(crate) struct Resume {
    pub subscription: usize,
    pub attempts: u32,
    /// Retries of the event's budget spent so far.
    pub retries_used: u32,
    /// What is left of a wait an answer asked for.
    pub asked_wait: Option<Duration>,
    /// The last failure, to retry after its wait; `None` when the wait is over (a parked
    /// event that came due) and the handler runs at once.
    pub error: Option<HandlerError>,
}

/// Why a handler's run on an event stopped without success.
enum HandlerEnd {
    /// Failed for good (permanently, budget spent, or the consumer is stopping), after
    /// this many attempts.
    Failed(HandlerError, u32),
    /// The next retry is due in `delay`, longer than a worker waits.
    Park {
        delay: Duration,
        attempts: u32,
        error: HandlerError,
    },
}

/// The event in a record, or why the record is not one.
pub(crate) fn decode(message: &Record) -> Result<Event, String> {
    let origin = Origin {
        topic: message.topic_name().clone(),
        partition: message.partition(),
        offset: message.offset(),
    };
    // One pass over the headers: the envelope's, and whether a replay marked the record.
    let mut replayed = false;
    let headers = message
        .headers()
        .into_iter()
        .flat_map(|headers| headers.iter())
        .inspect(|h| replayed |= h.key == crate::dlq::header::REPLAYED_AT)
        .map(|h| (h.key, h.value));
    Envelope::decode_shared(message.key(), headers, message.payload_bytes())
        .map_err(|e| format!("not an event envelope: {e}"))
        .and_then(|envelope| {
            Event::new(envelope, origin)
                .map(|event| event.replayed(replayed))
                .map_err(|e| format!("body is not JSON: {e}"))
        })
}

/// Handles one record on its own, each handler's run committed by itself: the path of
/// events whose handler is being retried, of what waits behind them on their key, and of
/// parked events whose retry came due.
pub(crate) async fn process(
    shared: &Shared,
    message: &Record,
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
    let budget = Arc::new(RetryBudget::new(
        shared.retry,
        resume.as_ref().map_or(0, |r| r.retries_used),
        true,
    ));
    if let Some(wait) = resume.as_ref().and_then(|r| r.asked_wait) {
        budget.ask(wait);
    }
    for (index, subscription) in shared.subscriptions.iter().enumerate() {
        if !subscription.filter.matches(event.kind()) {
            continue;
        }
        let prior = match &resume {
            Some(resume) if index < resume.subscription => continue,
            Some(resume) if index == resume.subscription => Some(resume),
            _ => None,
        };
        match run_handler(shared, index, &event, prior, &budget).await {
            Ok(outcome) => observe::handled(event.name(), outcome),
            Err(HandlerEnd::Park {
                delay,
                attempts,
                error,
            }) => {
                let retry = parking::Retry {
                    handler: &subscription.name,
                    attempts,
                    retries_used: budget.used(),
                    delay,
                    error: &error.to_string(),
                };
                return park(shared, message, &event, &retry).await;
            }
            // Retries stopped because the consumer is stopping: leave it for redelivery.
            Err(HandlerEnd::Failed(error, _))
                if error.is_transient() && shared.stopping.is_cancelled() =>
            {
                return JobOutcome::Abandoned;
            }
            Err(HandlerEnd::Failed(error, attempts)) => {
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

/// Parks `message` until its retry is due, waiting out a database outage; abandoned (left
/// for redelivery) when the consumer stops first.
async fn park(
    shared: &Shared,
    message: &Record,
    event: &Event,
    retry: &parking::Retry<'_>,
) -> JobOutcome {
    let parked = parking::parked_event(message, event.client_key(), retry);
    let stored = through_outages(shared, "park the event", || {
        shared.parked.park(std::slice::from_ref(&parked))
    })
    .await;
    if stored.is_none() {
        return JobOutcome::Abandoned;
    }
    metrics::counter!(EVENTS_PARKED, "reason" => "retry").increment(1);
    tracing::info!(
        event_id = event.id(),
        handler = retry.handler,
        error = retry.error,
        retry_in_s = retry.delay.as_secs(),
        "retry due later: event parked"
    );
    JobOutcome::Parked {
        due_at_ms: parked.due_at_ms,
    }
}

/// Dead-letters an event whose handler `index` failed for good.
pub(crate) async fn give_up(
    shared: &Shared,
    message: &Record,
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

/// Runs `operation` until it succeeds, waiting out a database outage between tries
/// (logging `what` could not be done); `None` when the consumer stops first.
pub(crate) async fn through_outages<T, F, Fut>(
    shared: &Shared,
    what: &str,
    mut operation: F,
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tributary_common::store::StoreError>>,
{
    loop {
        match operation().await {
            Ok(value) => return Some(value),
            Err(error) => {
                tracing::warn!(%error, "cannot {what}: waiting for the database");
                if shared.stopping.is_cancelled() || !wait_for_database(shared).await {
                    return None;
                }
            }
        }
    }
}

/// Runs handler `index` on one event, retrying transient failures out of the event's
/// `budget` (continuing from `prior` attempts made elsewhere): sleeping through short
/// waits, handing back long ones to be parked.
async fn run_handler(
    shared: &Shared,
    index: usize,
    event: &Arc<Event>,
    prior: Option<&Resume>,
    budget: &Arc<RetryBudget>,
) -> Result<Outcome, HandlerEnd> {
    let subscription = &shared.subscriptions[index];
    let mut attempts = prior.map_or(0, |prior| prior.attempts);
    let mut failed = prior.and_then(|prior| prior.error.clone());
    loop {
        if let Some(error) = failed.take() {
            if !error.is_transient() || shared.stopping.is_cancelled() {
                return Err(HandlerEnd::Failed(error, attempts));
            }
            let Some(delay) = next_retry(shared, event, budget).await else {
                metrics::counter!(BUDGET_EXHAUSTED).increment(1);
                return Err(HandlerEnd::Failed(error, attempts));
            };
            if delay > shared.park_after {
                return Err(HandlerEnd::Park {
                    delay,
                    attempts,
                    error,
                });
            }
            metrics::counter!(HANDLER_RETRIES, "handler" => subscription.name.clone()).increment(1);
            tracing::info!(
                event_id = event.id(), handler = %subscription.name, %error,
                retry_in_ms = delay.as_millis() as u64, "handler failed transiently"
            );
            tokio::time::sleep(delay).await;
        }
        attempts += 1;
        match attempt_once(shared, index, event, attempts, budget).await {
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
                    return Err(HandlerEnd::Failed(error, attempts));
                }
            }
            Err(error) => {
                observe::handled(event.name(), Outcome::Failure);
                failed = Some(error);
            }
        }
    }
}

/// Takes the event's next retry and its wait: the backoff, at least what an answer asked
/// for and what is left of a quota pause on the tenant or the app; `None` when the budget
/// is spent.
async fn next_retry(shared: &Shared, event: &Event, budget: &RetryBudget) -> Option<Duration> {
    let paused = shared.confluence.pause_remaining(event.client_key()).await;
    let floor = [budget.asked_wait(), paused].into_iter().flatten().max();
    let delay = budget.next_delay(floor)?;
    budget.take().then_some(delay)
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
    budget: &Arc<RetryBudget>,
) -> Result<StateWrites, HandlerError> {
    let subscription = &shared.subscriptions[index];
    // A Forge identity is looked up only where it may be needed: a tenant without a
    // Connect identity, or an event Forge sent.
    let forge = if tenant.is_none() || event.source() == EventSource::Forge {
        shared.tenants.forge(event.client_key()).await?
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
        budget: budget.clone(),
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
    budget: &Arc<RetryBudget>,
) -> Result<Outcome, HandlerError> {
    let name = &shared.subscriptions[index].name;
    if shared.handled.is_handled(name, event.id()).await? {
        return Ok(Outcome::Duplicate);
    }
    let tenant = tenant_for(shared, event).await?;
    let writes = run_once(shared, index, event, attempt, tenant, None, budget).await?;
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
    message: &Record,
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
