//! One batch of records, from one or more partitions: one query for what was handled
//! before, the tenants' events run (each tenant's in order, different tenants
//! concurrently), then one transaction for every handled-event record and state write of
//! the batch.
//!
//! Until that transaction commits nothing of the batch is recorded, so a crash anywhere
//! before it leaves every event to be run again, and one after it leaves only offsets to
//! store: each event's state writes happen once. A later event of a tenant reads the state
//! its earlier events of the batch wrote, though none of it is committed yet.
//!
//! An event whose handler fails transiently is not retried inside the batch, where it would
//! hold up the commit of everything else: the batch commits what finished and hands the
//! event, with the tenant's events behind it, to a lane of its own (`process`), where it
//! retries as any event does.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use tokio::sync::Semaphore;
use tributary_common::store::{HandledSet, HandlerRun, StateWrites};

use super::Job;
use super::execute::{
    JobOutcome, Resume, Shared, UNKNOWN_EVENT, dead_letter, decode, give_up, record_of, run_once,
    tenant_for, wait_for_database,
};
use crate::backoff::RetryBudget;
use crate::dlq::{Letter, Reason};
use crate::event::Event;
use crate::handler::HandlerError;
use crate::observe::{self, BUDGET_EXHAUSTED, Outcome};
use crate::tenants::CachedTenant;

/// Most records in one batch.
pub(crate) const MAX_BATCH: usize = 500;

/// How a record of a batch ended.
#[derive(Debug)]
pub(crate) enum JobState {
    /// Handled (or found handled before) and committed with the batch.
    Handled,
    /// Written to the dead-letter topic.
    DeadLettered,
    /// Handed to a lane: the first of its key with where to resume, the rest from the start.
    Detached(Option<Resume>),
    /// Not finished (the consumer is stopping, or the failure guard tripped); its offset
    /// stays uncommitted and the record will be delivered again.
    Pending,
}

impl JobState {
    pub fn is_finished(&self) -> bool {
        matches!(self, JobState::Handled | JobState::DeadLettered)
    }
}

pub(crate) struct BatchDone {
    pub jobs: Vec<Job>,
    pub states: Vec<JobState>,
    pub guard_tripped: bool,
}

/// A handler's run waiting for the batch's commit.
struct PendingRun {
    job: usize,
    subscription: usize,
    writes: StateWrites,
}

#[derive(Default)]
struct GroupDone {
    runs: Vec<PendingRun>,
    states: Vec<(usize, JobState)>,
    guard_tripped: bool,
}

pub(crate) async fn run(shared: Arc<Shared>, workers: Arc<Semaphore>, jobs: Vec<Job>) -> BatchDone {
    metrics::histogram!(observe::BATCH_SIZE).record(jobs.len() as f64);
    let decoded: Vec<Result<Arc<Event>, String>> = jobs
        .iter()
        .map(|job| decode(&job.message).map(Arc::new))
        .collect();
    let pending = |jobs: Vec<Job>| BatchDone {
        states: jobs.iter().map(|_| JobState::Pending).collect(),
        jobs,
        guard_tripped: false,
    };
    let Some(handled) = handled_before(&shared, &decoded).await else {
        return pending(jobs);
    };

    // The records of each key of each partition, in offset order. A batch holds each of its
    // partitions' records together, so keys are looked up within the current partition only.
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut by_key: HashMap<&[u8], usize> = HashMap::new();
    let mut partition: Option<(&str, i32)> = None;
    for (i, job) in jobs.iter().enumerate() {
        let here = (job.message.topic(), job.message.partition());
        if partition != Some(here) {
            partition = Some(here);
            by_key.clear();
        }
        let key = job.message.key().unwrap_or_default();
        let group = *by_key.entry(key).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[group].push(i);
    }
    let done = futures::future::join_all(
        groups
            .iter()
            .map(|group| run_group(&shared, &workers, &jobs, &decoded, &handled, group)),
    )
    .await;

    let mut states: Vec<JobState> = jobs.iter().map(|_| JobState::Pending).collect();
    let mut runs = Vec::new();
    let mut guard_tripped = false;
    for group in done {
        guard_tripped |= group.guard_tripped;
        runs.extend(group.runs);
        for (i, state) in group.states {
            states[i] = state;
        }
    }

    let mut counts: HashMap<(&str, Outcome), u64> = HashMap::new();
    let records: Vec<HandlerRun<'_>> = runs
        .iter()
        .filter_map(|run| {
            let event = decoded[run.job].as_ref().ok()?;
            Some(HandlerRun {
                event: record_of(&shared, run.subscription, event),
                writes: &run.writes,
            })
        })
        .collect();
    let Some(recorded) = commit(&shared, &records).await else {
        return pending(jobs);
    };
    for (record, recorded) in records.iter().zip(recorded) {
        let outcome = if recorded {
            Outcome::Success
        } else {
            Outcome::Duplicate
        };
        *counts
            .entry((record.event.event_type, outcome))
            .or_default() += 1;
    }
    drop(records);

    let mut handled_now = 0;
    let end_to_end = metrics::histogram!(observe::END_TO_END);
    for (state, event) in states.iter().zip(&decoded) {
        if let (JobState::Handled, Ok(event)) = (state, event) {
            observe::end_to_end_on(&end_to_end, event.time());
            handled_now += 1;
            for (index, subscription) in shared.subscriptions.iter().enumerate() {
                if subscription.filter.matches(event.kind())
                    && handled.contains(&shared.subscriptions[index].name, event.id())
                {
                    *counts
                        .entry((event.name(), Outcome::Duplicate))
                        .or_default() += 1;
                }
            }
        }
    }
    if handled_now > 0 {
        let mut guard = shared.guard.lock().unwrap_or_else(PoisonError::into_inner);
        for _ in 0..handled_now {
            guard.record(false);
        }
    }
    for ((event, outcome), count) in counts {
        metrics::counter!(observe::EVENTS_HANDLED, "event" => event.to_string(), "outcome" => outcome.as_str())
            .increment(count);
    }
    BatchDone {
        jobs,
        states,
        guard_tripped,
    }
}

/// Which (handler, event) pairs of the batch were handled before, in one query; `None`
/// when the consumer stopped while the database was away.
async fn handled_before(
    shared: &Shared,
    decoded: &[Result<Arc<Event>, String>],
) -> Option<HandledSet> {
    let ids: Vec<&str> = decoded
        .iter()
        .filter_map(|event| event.as_ref().ok().map(|event| event.id()))
        .collect();
    if ids.is_empty() {
        return Some(HandledSet::default());
    }
    let names: Vec<&str> = shared
        .subscriptions
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    loop {
        match shared.handled.handled(&names, &ids).await {
            Ok(found) => return Some(found),
            Err(error) => {
                tracing::warn!(%error, "cannot read the handled-event records: waiting for the database");
                if shared.stopping.is_cancelled() || !wait_for_database(shared).await {
                    return None;
                }
            }
        }
    }
}

/// Commits the batch's runs in one transaction, waiting out a database outage; `None` when
/// the consumer stopped first (nothing was committed).
async fn commit(shared: &Shared, records: &[HandlerRun<'_>]) -> Option<Vec<bool>> {
    let mut delay = Duration::from_millis(100);
    loop {
        match shared.handled.commit(records).await {
            Ok(recorded) => return Some(recorded),
            Err(error) => {
                tracing::warn!(%error, runs = records.len(), "committing a batch failed: retrying");
                if shared.stopping.is_cancelled() {
                    return None;
                }
                if error.is_transient() {
                    if !wait_for_database(shared).await {
                        return None;
                    }
                } else {
                    // Not an outage: nothing to wait for but time.
                    tokio::select! {
                        _ = shared.stopping.cancelled() => return None,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(shared.retry.max_delay);
                }
            }
        }
    }
}

/// How one event of a group ended.
enum EventEnd {
    Handled,
    DeadLettered,
    Detach(Resume),
    Stop { guard_tripped: bool },
}

/// Runs one key's events in order; stops at the first that cannot finish here.
async fn run_group(
    shared: &Shared,
    workers: &Semaphore,
    jobs: &[Job],
    decoded: &[Result<Arc<Event>, String>],
    handled: &HandledSet,
    group: &[usize],
) -> GroupDone {
    let mut done = GroupDone::default();
    // State written by this key's earlier events in the batch, not committed yet.
    let mut earlier: Option<Arc<StateWrites>> = None;
    // Handlers run on an event id in this batch (a record delivered twice runs once).
    let mut ran: HashSet<(usize, &str)> = HashSet::new();
    // The key's tenant, read once for its events in the batch (a key is one tenant) and
    // again after a lifecycle event, which changes it.
    let mut tenant = None;
    for (position, &i) in group.iter().enumerate() {
        let end = match &decoded[i] {
            Err(error) => {
                let letter = Letter {
                    reason: Reason::Undecodable,
                    handler: "-",
                    error,
                    attempts: 0,
                };
                match dead_letter(shared, &jobs[i].message, UNKNOWN_EVENT, &letter).await {
                    // Dead-lettering never parks.
                    JobOutcome::Finished | JobOutcome::Parked { .. } => EventEnd::DeadLettered,
                    JobOutcome::Abandoned => EventEnd::Stop {
                        guard_tripped: false,
                    },
                    JobOutcome::GuardTripped => EventEnd::Stop {
                        guard_tripped: true,
                    },
                }
            }
            Ok(event) => {
                let Ok(_permit) = workers.acquire().await else {
                    rest(&mut done, &group[position..], || JobState::Pending);
                    return done;
                };
                let end = run_event(
                    shared,
                    &jobs[i],
                    i,
                    event,
                    handled,
                    &mut ran,
                    &mut tenant,
                    &mut earlier,
                    &mut done.runs,
                )
                .await;
                if event.lifecycle().is_some() {
                    shared.tenants.invalidate(event.client_key()).await;
                    tenant = None;
                }
                end
            }
        };
        match end {
            EventEnd::Handled => done.states.push((i, JobState::Handled)),
            EventEnd::DeadLettered => done.states.push((i, JobState::DeadLettered)),
            EventEnd::Detach(resume) => {
                done.states.push((i, JobState::Detached(Some(resume))));
                rest(&mut done, &group[position + 1..], || {
                    JobState::Detached(None)
                });
                return done;
            }
            EventEnd::Stop { guard_tripped } => {
                done.guard_tripped = guard_tripped;
                rest(&mut done, &group[position..], || JobState::Pending);
                return done;
            }
        }
    }
    done
}

fn rest(done: &mut GroupDone, jobs: &[usize], state: impl Fn() -> JobState) {
    done.states.extend(jobs.iter().map(|&i| (i, state())));
}

/// Runs an event's handlers once each, staging their runs for the batch's commit.
#[allow(clippy::too_many_arguments)]
async fn run_event<'e>(
    shared: &Shared,
    job: &Job,
    i: usize,
    event: &'e Arc<Event>,
    handled: &HandledSet,
    ran: &mut HashSet<(usize, &'e str)>,
    tenant: &mut Option<Option<Arc<CachedTenant>>>,
    earlier: &mut Option<Arc<StateWrites>>,
    runs: &mut Vec<PendingRun>,
) -> EventEnd {
    // Inside a batch a Confluence request does not wait to retry: its batch's commit would
    // wait with it. The event's first failure takes it to a lane, which does.
    let budget = Arc::new(RetryBudget::new(shared.retry, 0, false));
    for (index, subscription) in shared.subscriptions.iter().enumerate() {
        if !subscription.filter.matches(event.kind()) {
            continue;
        }
        if handled.contains(&subscription.name, event.id()) || ran.contains(&(index, event.id())) {
            continue;
        }
        let result = loop {
            match attempt(shared, index, event, tenant, earlier.clone(), &budget).await {
                // An outage of the runtime's own database is not the event's fault: the
                // attempt does not count, and the event waits until the database is back.
                Err(error)
                    if error.is_transient()
                        && !shared.stopping.is_cancelled()
                        && super::execute::database_down(shared).await =>
                {
                    tracing::warn!(
                        event_id = event.id(), handler = %subscription.name, %error,
                        "the database is unreachable: pausing until it is back"
                    );
                    if !wait_for_database(shared).await {
                        break Err(error);
                    }
                }
                other => break other,
            }
        };
        match result {
            Ok(writes) => {
                if !writes.is_empty() {
                    let mut merged = earlier.as_deref().cloned().unwrap_or_default();
                    merged.merge(&writes);
                    *earlier = Some(Arc::new(merged));
                }
                runs.push(PendingRun {
                    job: i,
                    subscription: index,
                    writes,
                });
                ran.insert((index, event.id()));
            }
            Err(error) => return failed(shared, job, event, index, error, &budget).await,
        }
    }
    EventEnd::Handled
}

/// One attempt of handler `index`, reading the tenant if the key's events of the batch have
/// not yet (and every time for a lifecycle event, which changes it).
async fn attempt(
    shared: &Shared,
    index: usize,
    event: &Arc<Event>,
    tenant: &mut Option<Option<Arc<CachedTenant>>>,
    earlier: Option<Arc<StateWrites>>,
    budget: &Arc<RetryBudget>,
) -> Result<StateWrites, HandlerError> {
    if tenant.is_none() || event.lifecycle().is_some() {
        *tenant = Some(tenant_for(shared, event).await?);
    }
    let cached = tenant.clone().flatten();
    run_once(shared, index, event, 1, cached, earlier, budget).await
}

/// What becomes of an event whose handler `index` failed its first attempt.
async fn failed(
    shared: &Shared,
    job: &Job,
    event: &Event,
    index: usize,
    error: HandlerError,
    budget: &RetryBudget,
) -> EventEnd {
    observe::handled(event.name(), Outcome::Failure);
    if error.is_transient() {
        if shared.stopping.is_cancelled() {
            return EventEnd::Stop {
                guard_tripped: false,
            };
        }
        if !budget.is_spent() {
            return EventEnd::Detach(Resume {
                subscription: index,
                attempts: 1,
                retries_used: budget.used(),
                asked_wait: budget.asked_wait(),
                error: Some(error),
            });
        }
        metrics::counter!(BUDGET_EXHAUSTED).increment(1);
    }
    match give_up(shared, &job.message, event, index, &error, 1).await {
        // Dead-lettering never parks.
        JobOutcome::Finished | JobOutcome::Parked { .. } => EventEnd::DeadLettered,
        JobOutcome::Abandoned => EventEnd::Stop {
            guard_tripped: false,
        },
        JobOutcome::GuardTripped => EventEnd::Stop {
            guard_tripped: true,
        },
    }
}
