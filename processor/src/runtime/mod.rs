//! The consumer runtime. One dispatcher reads records and hands what is ready, from the
//! partitions with no batch running, to a batch (`batch`): one handled-before query, each
//! key's records in order and different keys concurrently (up to `processor_concurrency`
//! events at once), one commit.
//! Only once a batch has committed are its offsets stored, for librdkafka's auto-commit.
//! A key whose event needs retries leaves the batches for a lane of its own until its
//! queue is empty, so it holds up neither its batch nor the partition. A retry due later
//! than a worker should wait parks the event in the database (`parking`), with the key's
//! later records behind it, and the dispatcher runs it again once due.

mod batch;
mod consumer;
mod execute;
mod guard;
mod offsets;
mod parking;
mod prune;
mod record;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::FutureExt;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tributary_common::Config;
use tributary_common::shutdown::Shutdown;

pub(crate) use execute::Shared;
pub(crate) use guard::FailureGuard;
pub(crate) use offsets::Assignments;
pub(crate) use record::Record;

use crate::ProcessorError;
use crate::observe::{EVENTS_CONSUMED, EVENTS_PARKED, IN_FLIGHT, PARKED_EVENTS};
use batch::{BatchDone, JobState, MAX_BATCH};
use consumer::{RuntimeContext, consumer_config};
use execute::{JobOutcome, Resume};
use parking::{ParkedKeyState, PartitionParking};
use tributary_common::store::{ParkedEvent, ParkedKey};

/// Records received but not finished, per unit of concurrency: enough to keep workers busy
/// when keys are unevenly spread, and a bound on memory.
const BUFFER_PER_WORKER: usize = 16;

/// Records of one key on one partition: they must run in order.
type KeyId = (String, i32, Vec<u8>);

pub(crate) struct Job {
    message: Record,
    generation: u64,
}

struct Finished {
    key: KeyId,
    offset: i64,
    generation: u64,
    outcome: JobOutcome,
}

enum Done {
    Batch {
        /// The partitions the batch took records of.
        members: Vec<(String, i32)>,
        done: BatchDone,
    },
    Lane(Finished),
    /// A partition's parked keys were read (`None`: the consumer stopped first).
    ParkingRead {
        topic: String,
        partition: i32,
        generation: u64,
        keys: Option<Vec<ParkedKey>>,
        /// A periodic re-read, merged into what is known rather than replacing it.
        refresh: bool,
    },
    /// Records of parked keys were parked behind them (`parked` false: the consumer
    /// stopped first, and they stay pending).
    ParkedBehind {
        topic: String,
        partition: i32,
        generation: u64,
        jobs: Vec<Job>,
        parked: bool,
    },
    /// A parked key's first event ran.
    ParkedRan {
        topic: String,
        partition: i32,
        generation: u64,
        key: Vec<u8>,
        ran: ParkedRun,
    },
}

/// How a parked event's run ended.
enum ParkedRun {
    /// Handled or dead-lettered, and removed from the parked events.
    Removed,
    /// Parked again, due then.
    Rescheduled(tokio::time::Instant),
    /// The key has no parked event left.
    Empty,
    /// Not run (the consumer is stopping), or the failure guard tripped.
    Stopped { guard_tripped: bool },
}

/// How often parked events are looked at (due ones started, new partitions read).
const PARKING_TICK: Duration = Duration::from_millis(250);
/// How often a held partition's parked keys are read again, to pick up events parked by
/// work from before a rebalance that finished after the partition was read.
const PARKING_REFRESH: Duration = Duration::from_secs(30);

enum Stop {
    Shutdown,
    GuardTripped,
}

pub(crate) async fn consume(
    shared: Arc<Shared>,
    config: &Config,
    assignments: Arc<Mutex<Assignments>>,
    shutdown: Shutdown,
) -> Result<(), ProcessorError> {
    let consumer: StreamConsumer<RuntimeContext> =
        consumer_config(config).create_with_context(RuntimeContext {
            assignments: assignments.clone(),
        })?;
    let topics: Vec<&str> = config.processor_topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    tracing::info!(group = %config.processor_group_id, ?topics, "consuming");

    let concurrency = usize::try_from(config.processor_concurrency).unwrap_or(usize::MAX);
    let mut dispatcher = Dispatcher {
        shared: shared.clone(),
        consumer: &consumer,
        assignments,
        workers: Arc::new(Semaphore::new(concurrency)),
        tasks: JoinSet::new(),
        partitions: HashMap::new(),
        lanes: HashMap::new(),
        buffered: 0,
        draining: false,
        in_flight: metrics::gauge!(IN_FLIGHT),
        consumed: HashMap::new(),
        parking: HashMap::new(),
        parked_gauge: metrics::gauge!(PARKED_EVENTS),
        last_refresh: tokio::time::Instant::now(),
        batch_wait: Duration::from_millis(config.processor_batch_wait_ms),
        gather_until: None,
    };
    execute::take_instruments(&shared);
    let background = Shutdown::new();
    let follower = tokio::spawn(
        shared
            .tenants
            .clone()
            .follow_changes(shared.tenants.store().change_feed(), background.clone()),
    );
    let pruner = tokio::spawn(prune::run(
        shared.handled.clone(),
        prune::Retention::from_config(config),
        background.clone(),
    ));
    let max_buffered = concurrency.saturating_mul(BUFFER_PER_WORKER).max(MAX_BATCH);
    let mut parking_tick = tokio::time::interval(PARKING_TICK);
    parking_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let gather = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(gather);
    let mut gather_set = None;
    let stop = loop {
        if let Some(until) = dispatcher.gather_until
            && (gather_set != Some(until) || gather.is_elapsed())
        {
            gather.as_mut().reset(until);
            gather_set = Some(until);
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break Stop::Shutdown,
            () = &mut gather, if dispatcher.gather_until.is_some() => dispatcher.dispatch_ready(),
            _ = parking_tick.tick() => {
                if dispatcher.tend_parked() {
                    break Stop::GuardTripped;
                }
            }
            Some(joined) = dispatcher.tasks.join_next() => {
                match joined {
                    Ok(done) => {
                        if dispatcher.done(done) {
                            break Stop::GuardTripped;
                        }
                    }
                    Err(error) => {
                        shared.stopping.cancel();
                        background.cancel();
                        return Err(ProcessorError::Worker(error.to_string()));
                    }
                }
            }
            received = consumer.recv(), if dispatcher.buffered < max_buffered => {
                match received {
                    Ok(message) => dispatcher.receive(&message),
                    Err(error) => tracing::warn!(%error, "kafka consumer error"),
                }
                // Take what else is ready now, so a partition's next batch has it.
                while dispatcher.buffered < max_buffered {
                    match consumer.recv().now_or_never() {
                        Some(Ok(message)) => dispatcher.receive(&message),
                        Some(Err(error)) => tracing::warn!(%error, "kafka consumer error"),
                        None => break,
                    }
                }
                dispatcher.dispatch_ready();
            }
        }
    };
    shared.stopping.cancel();
    background.cancel();
    let _ = follower.await;
    let _ = pruner.await;
    dispatcher.drain(drain_deadline(config)).await;
    // The final commit and leaving the group wait for the broker, so they run off the async
    // threads and get the rest of the shutdown time; an unreachable broker cannot hold the
    // stop past its deadline.
    drop(dispatcher);
    let close = tokio::task::spawn_blocking(move || {
        if let Err(error) = consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(%error, "final commit");
        }
        drop(consumer);
    });
    if tokio::time::timeout(config.shutdown_timeout() / 3, close)
        .await
        .is_err()
    {
        tracing::warn!("committing and leaving the consumer group took too long");
    }
    match stop {
        Stop::Shutdown => {
            tracing::info!("consumer stopped");
            Ok(())
        }
        Stop::GuardTripped => {
            let guard = shared.guard.lock().unwrap_or_else(PoisonError::into_inner);
            Err(ProcessorError::GuardTripped {
                failures: guard.failures(),
                window: guard.window(),
            })
        }
    }
}

/// In-flight work gets two thirds of the shutdown time; committing and leaving the rest.
fn drain_deadline(config: &Config) -> Duration {
    config.shutdown_timeout() * 2 / 3
}

/// One partition's records waiting for a batch.
#[derive(Default)]
struct PartitionQueue {
    ready: VecDeque<Job>,
    /// A batch of this partition is running: the next waits for it, so records of one key
    /// never run in two batches at once.
    busy: bool,
    /// Most records in the next batch: a partition starts with small batches, so the first
    /// results commit soon after it is assigned, and doubles them up to `MAX_BATCH` while
    /// records keep coming.
    bound: usize,
    /// When the oldest record in `ready` arrived (or was left there by a batch's take).
    since: Option<tokio::time::Instant>,
}

/// The bound of a partition's first batch.
const FIRST_BATCH: usize = 16;

impl PartitionQueue {
    /// How many of its records the partition's next batch takes.
    fn next_take(&self) -> usize {
        self.ready.len().min(self.bound.max(FIRST_BATCH))
    }
}

struct Dispatcher<'c> {
    shared: Arc<Shared>,
    consumer: &'c StreamConsumer<RuntimeContext>,
    assignments: Arc<Mutex<Assignments>>,
    workers: Arc<Semaphore>,
    tasks: JoinSet<Done>,
    /// By topic, then partition: per-record lookups by `&str` allocate nothing.
    partitions: HashMap<String, HashMap<i32, PartitionQueue>>,
    /// Keys taken out of the batches: one job running, and what waits behind it.
    lanes: HashMap<KeyId, VecDeque<(Job, Option<Resume>)>>,
    buffered: usize,
    /// Stopping: start nothing new.
    draining: bool,
    in_flight: metrics::Gauge,
    /// Per topic: its consumed counter and its name, shared by its records.
    consumed: HashMap<String, (metrics::Counter, Arc<str>)>,
    /// Parked keys of each held partition.
    parking: HashMap<(String, i32), PartitionParking>,
    parked_gauge: metrics::Gauge,
    last_refresh: tokio::time::Instant,
    /// How long a partition's oldest record may wait for more to join its batch.
    batch_wait: Duration,
    /// When records are waiting for more to join them: when to start their batch.
    gather_until: Option<tokio::time::Instant>,
}

fn key_of(message: &Record) -> KeyId {
    (
        message.topic().to_string(),
        message.partition(),
        message.key().unwrap_or_default().to_vec(),
    )
}

impl Dispatcher<'_> {
    fn assignments(&self) -> std::sync::MutexGuard<'_, Assignments> {
        self.assignments
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn receive(&mut self, message: &BorrowedMessage<'_>) {
        let topic = message.topic();
        let name = match self.consumed.get(topic) {
            Some((counter, name)) => {
                counter.increment(1);
                name.clone()
            }
            None => {
                let counter = metrics::counter!(EVENTS_CONSUMED, "topic" => topic.to_string());
                counter.increment(1);
                let name: Arc<str> = Arc::from(topic);
                self.consumed
                    .insert(topic.to_string(), (counter, name.clone()));
                name
            }
        };
        let message = Record::copied(message, name);
        let generation =
            self.assignments()
                .received(message.topic(), message.partition(), message.offset());
        self.set_buffered(self.buffered + 1);
        let job = Job {
            message,
            generation,
        };
        let topic = job.message.topic();
        if !self.partitions.contains_key(topic) {
            self.partitions.insert(topic.to_string(), HashMap::new());
        }
        if let Some(partitions) = self.partitions.get_mut(topic) {
            let queue = partitions.entry(job.message.partition()).or_default();
            if queue.ready.is_empty() {
                queue.since = Some(tokio::time::Instant::now());
            }
            queue.ready.push_back(job);
        }
    }

    fn queue_mut(&mut self, topic: &str, partition: i32) -> Option<&mut PartitionQueue> {
        self.partitions.get_mut(topic)?.get_mut(&partition)
    }

    /// Starts batches from the partitions that have records and no batch running. Unless
    /// a full batch is ready, it first lets the oldest waiting record wait `batch_wait`, so
    /// that at a modest rate a batch gathers more than one or two events: each batch costs
    /// a handled-before query and a commit whatever its size. A batch takes records of
    /// several partitions, each partition's whole take in one batch, up to `MAX_BATCH`.
    fn dispatch_ready(&mut self) {
        self.gather_until = None;
        if self.draining {
            return;
        }
        let mut idle = Vec::new();
        for (topic, partitions) in &self.partitions {
            for (partition, queue) in partitions {
                if !queue.busy && !queue.ready.is_empty() {
                    idle.push((topic.clone(), *partition));
                }
            }
        }
        let mut candidates = Vec::with_capacity(idle.len());
        let mut available = 0;
        let mut oldest: Option<tokio::time::Instant> = None;
        for (topic, partition) in idle {
            let Some(generation) = self.drop_stale(&topic, partition) else {
                continue;
            };
            // Nothing of a partition runs before its parked keys are known.
            if !self.parking_known(&topic, partition, generation) {
                continue;
            }
            let Some(queue) = self.queue_mut(&topic, partition) else {
                continue;
            };
            available += queue.next_take();
            oldest = match (oldest, queue.since) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            candidates.push((topic, partition, generation));
        }
        if candidates.is_empty() {
            return;
        }
        if available < MAX_BATCH
            && let Some(oldest) = oldest
        {
            let due = oldest + self.batch_wait;
            if due > tokio::time::Instant::now() {
                self.gather_until = Some(due);
                return;
            }
        }
        let mut jobs = Vec::new();
        let mut members = Vec::new();
        for (topic, partition, generation) in candidates {
            let take = self
                .queue_mut(&topic, partition)
                .map_or(0, |queue| queue.next_take());
            if !jobs.is_empty() && jobs.len() + take > MAX_BATCH {
                self.spawn_batch(std::mem::take(&mut members), std::mem::take(&mut jobs));
            }
            let taken = self.take(&topic, partition, generation, take);
            if !taken.is_empty() {
                if let Some(queue) = self.queue_mut(&topic, partition) {
                    queue.busy = true;
                }
                jobs.extend(taken);
                members.push((topic, partition));
            }
        }
        if !jobs.is_empty() {
            self.spawn_batch(members, jobs);
        }
    }

    /// Drops the partition's records from before a revoke (they will be delivered again;
    /// the current ones decide) and returns the generation of the first one left.
    fn drop_stale(&mut self, topic: &str, partition: i32) -> Option<u64> {
        let queue = self
            .partitions
            .get_mut(topic)
            .and_then(|partitions| partitions.get_mut(&partition))?;
        let mut stale = 0;
        {
            let assignments = self
                .assignments
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            while let Some(job) = queue.ready.front() {
                if assignments.is_current(topic, partition, job.generation) {
                    break;
                }
                queue.ready.pop_front();
                stale += 1;
            }
        }
        if queue.ready.is_empty() {
            queue.since = None;
        }
        let generation = queue.ready.front().map(|job| job.generation);
        self.set_buffered(self.buffered.saturating_sub(stale));
        generation
    }

    /// Takes up to `take` of the partition's records for a batch: those of keys in a lane
    /// join their lane, those of parked keys are parked behind them, the rest are returned.
    fn take(&mut self, topic: &str, partition: i32, generation: u64, take: usize) -> Vec<Job> {
        let Some(queue) = self.queue_mut(topic, partition) else {
            return Vec::new();
        };
        queue.bound = (queue.bound.max(FIRST_BATCH) * 2).min(MAX_BATCH);
        let taken: Vec<Job> = queue.ready.drain(..take.min(queue.ready.len())).collect();
        if queue.ready.is_empty() {
            queue.since = None;
        }
        let mut jobs = Vec::with_capacity(taken.len());
        let mut behind = Vec::new();
        let mut dropped = 0;
        {
            let assignments = self
                .assignments
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let mut parked_keys = self
                .parking
                .get_mut(&(topic.to_string(), partition))
                .and_then(PartitionParking::keys_mut)
                .filter(|keys| !keys.is_empty());
            for job in taken {
                if !assignments.is_current(topic, partition, job.generation) {
                    dropped += 1;
                    continue;
                }
                if !self.lanes.is_empty() {
                    let key = key_of(&job.message);
                    if let Some(lane) = self.lanes.get_mut(&key) {
                        lane.push_back((job, None));
                        continue;
                    }
                }
                if let Some(keys) = parked_keys.as_deref_mut()
                    && let Some(state) = keys.get_mut(job.message.key().unwrap_or_default())
                {
                    state.inserting += 1;
                    behind.push(job);
                    continue;
                }
                jobs.push(job);
            }
        }
        self.set_buffered(self.buffered.saturating_sub(dropped));
        if !behind.is_empty() {
            self.park_behind(topic, partition, generation, behind);
        }
        jobs
    }

    fn spawn_batch(&mut self, members: Vec<(String, i32)>, jobs: Vec<Job>) {
        let shared = self.shared.clone();
        let workers = self.workers.clone();
        self.tasks.spawn(async move {
            let done = batch::run(shared, workers, jobs).await;
            Done::Batch { members, done }
        });
    }

    /// Books finished work; true when the failure guard tripped.
    fn done(&mut self, done: Done) -> bool {
        match done {
            Done::Batch { members, done } => self.batch_done(members, done),
            Done::Lane(finished) => self.lane_done(finished),
            Done::ParkingRead {
                topic,
                partition,
                generation,
                keys,
                refresh,
            } => {
                self.parking_read(&topic, partition, generation, keys, refresh);
                false
            }
            Done::ParkedBehind {
                topic,
                partition,
                generation,
                jobs,
                parked,
            } => {
                self.parked_behind(&topic, partition, generation, jobs, parked);
                false
            }
            Done::ParkedRan {
                topic,
                partition,
                generation,
                key,
                ran,
            } => self.parked_ran(&topic, partition, generation, key, ran),
        }
    }

    fn batch_done(&mut self, members: Vec<(String, i32)>, done: BatchDone) -> bool {
        // The offset each member partition may be stored at; the jobs come in member order.
        let mut points: Vec<Option<i64>> = vec![None; members.len()];
        let mut member = 0;
        let mut finished = 0;
        let mut detached = Vec::new();
        {
            let mut assignments = self
                .assignments
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for (job, state) in done.jobs.into_iter().zip(done.states) {
                let (topic, partition) = (job.message.topic(), job.message.partition());
                if members
                    .get(member)
                    .is_none_or(|(t, p)| t != topic || *p != partition)
                    && let Some(found) = members
                        .iter()
                        .position(|(t, p)| t == topic && *p == partition)
                {
                    member = found;
                }
                match state {
                    state if state.is_finished() => {
                        finished += 1;
                        let moved = assignments.finished(
                            topic,
                            partition,
                            job.generation,
                            job.message.offset(),
                        );
                        if let Some(point) = points.get_mut(member) {
                            *point = moved.or(*point);
                        }
                    }
                    JobState::Detached(resume)
                        if !self.draining
                            && assignments.is_current(topic, partition, job.generation) =>
                    {
                        detached.push((job, resume));
                    }
                    // Left pending: the record will be delivered again.
                    _ => finished += 1,
                }
            }
        }
        self.set_buffered(self.buffered.saturating_sub(finished));
        for ((topic, partition), point) in members.iter().zip(points) {
            if let Some(point) = point {
                self.store(topic, *partition, point);
            }
        }
        for (job, resume) in detached {
            let key = key_of(&job.message);
            match self.lanes.get_mut(&key) {
                Some(lane) => lane.push_back((job, resume)),
                None => {
                    self.lanes.insert(key.clone(), VecDeque::new());
                    self.spawn_lane(key, job, resume);
                }
            }
        }
        for (topic, partition) in &members {
            if let Some(queue) = self.queue_mut(topic, *partition) {
                queue.busy = false;
            }
        }
        if done.guard_tripped {
            return true;
        }
        self.dispatch_ready();
        false
    }

    /// Books a lane's finished job; true when the failure guard tripped.
    fn lane_done(&mut self, finished: Finished) -> bool {
        self.set_buffered(self.buffered.saturating_sub(1));
        let (topic, partition, _) = &finished.key;
        if matches!(
            finished.outcome,
            JobOutcome::Finished | JobOutcome::Parked { .. }
        ) {
            let point = self.assignments().finished(
                topic,
                *partition,
                finished.generation,
                finished.offset,
            );
            if let Some(point) = point {
                self.store(topic, *partition, point);
            }
        }
        match finished.outcome {
            JobOutcome::Finished => {}
            JobOutcome::Parked { due_at_ms } => {
                self.lane_parked(finished.key, finished.generation, due_at_ms);
                return false;
            }
            // Its offset stays pending, so nothing behind it on its key may run either.
            JobOutcome::Abandoned | JobOutcome::GuardTripped => {
                self.drop_lane(&finished.key);
                return finished.outcome == JobOutcome::GuardTripped;
            }
        }
        self.start_next(finished.key);
        false
    }

    /// Starts the next job of a lane, skipping jobs whose partition was revoked meanwhile;
    /// an empty lane ends, and its key's records go to batches again.
    fn start_next(&mut self, key: KeyId) {
        loop {
            let next = if self.draining {
                None
            } else {
                self.lanes.get_mut(&key).and_then(VecDeque::pop_front)
            };
            let Some((job, resume)) = next else {
                self.drop_lane(&key);
                return;
            };
            let current = self.assignments().is_current(
                job.message.topic(),
                job.message.partition(),
                job.generation,
            );
            if current {
                self.spawn_lane(key, job, resume);
                return;
            }
            self.set_buffered(self.buffered.saturating_sub(1));
        }
    }

    fn drop_lane(&mut self, key: &KeyId) {
        if let Some(waiting) = self.lanes.remove(key) {
            self.set_buffered(self.buffered.saturating_sub(waiting.len()));
        }
    }

    fn spawn_lane(&mut self, key: KeyId, job: Job, resume: Option<Resume>) {
        let shared = self.shared.clone();
        let workers = self.workers.clone();
        self.tasks.spawn(async move {
            let outcome = match workers.acquire_owned().await {
                Ok(_permit) => execute::process(&shared, &job.message, resume).await,
                Err(_) => JobOutcome::Abandoned,
            };
            Done::Lane(Finished {
                key,
                offset: job.message.offset(),
                generation: job.generation,
                outcome,
            })
        });
    }

    /// True when the partition's parked keys are known for `generation`; otherwise starts
    /// reading them (once) and the partition waits.
    fn parking_known(&mut self, topic: &str, partition: i32, generation: u64) -> bool {
        let slot = (topic.to_string(), partition);
        match self.parking.get(&slot) {
            Some(PartitionParking::Loaded { generation: g, .. }) if *g == generation => true,
            Some(PartitionParking::Loading { generation: g }) if *g == generation => false,
            _ => {
                self.parking
                    .insert(slot, PartitionParking::Loading { generation });
                self.read_parking(topic, partition, generation, false);
                false
            }
        }
    }

    fn read_parking(&mut self, topic: &str, partition: i32, generation: u64, refresh: bool) {
        let shared = self.shared.clone();
        let topic = topic.to_string();
        self.tasks.spawn(async move {
            let keys = execute::through_outages(&shared, "read parked events", || {
                shared.parked.keys(&topic, partition)
            })
            .await;
            Done::ParkingRead {
                topic,
                partition,
                generation,
                keys,
                refresh,
            }
        });
    }

    fn parking_read(
        &mut self,
        topic: &str,
        partition: i32,
        generation: u64,
        keys: Option<Vec<ParkedKey>>,
        refresh: bool,
    ) {
        let slot = (topic.to_string(), partition);
        let current = self.assignments().is_current(topic, partition, generation);
        let Some(keys) = keys.filter(|_| current) else {
            if !refresh {
                self.parking.remove(&slot);
            }
            return;
        };
        if refresh {
            // Only keys this dispatcher does not track yet: what it tracks is newer.
            if let Some(known) = self
                .parking
                .get_mut(&slot)
                .and_then(PartitionParking::keys_mut)
            {
                let read = PartitionParking::loaded(generation, keys);
                if let PartitionParking::Loaded { keys: read, .. } = read {
                    for (key, state) in read {
                        known.entry(key).or_insert(state);
                    }
                }
            }
        } else {
            if !keys.is_empty() {
                tracing::info!(
                    topic,
                    partition,
                    keys = keys.len(),
                    "partition has parked events"
                );
            }
            self.parking
                .insert(slot, PartitionParking::loaded(generation, keys));
            self.dispatch_ready();
        }
        self.update_parked_gauge();
    }

    /// Parks `jobs` (records of parked keys, counted as inserting) behind their keys'
    /// parked events.
    fn park_behind(&mut self, topic: &str, partition: i32, generation: u64, jobs: Vec<Job>) {
        let shared = self.shared.clone();
        let topic = topic.to_string();
        self.tasks.spawn(async move {
            let events: Vec<ParkedEvent> = jobs
                .iter()
                .map(|job| parking::behind(&job.message))
                .collect();
            let parked =
                execute::through_outages(&shared, "park records behind their tenant", || {
                    shared.parked.park(&events)
                })
                .await
                .is_some();
            if parked {
                metrics::counter!(EVENTS_PARKED, "reason" => "behind").increment(jobs.len() as u64);
            }
            Done::ParkedBehind {
                topic,
                partition,
                generation,
                jobs,
                parked,
            }
        });
    }

    fn parked_behind(
        &mut self,
        topic: &str,
        partition: i32,
        generation: u64,
        jobs: Vec<Job>,
        parked: bool,
    ) {
        let count = jobs.len();
        let mut point = None;
        {
            let mut keys = self
                .parking
                .get_mut(&(topic.to_string(), partition))
                .filter(|p| p.generation() == generation)
                .and_then(PartitionParking::keys_mut);
            let mut assignments = self
                .assignments
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for job in &jobs {
                if let Some(state) = keys
                    .as_deref_mut()
                    .and_then(|keys| keys.get_mut(job.message.key().unwrap_or_default()))
                {
                    state.inserting = state.inserting.saturating_sub(1);
                    if parked {
                        state.rows += 1;
                    }
                }
                if parked {
                    let moved = assignments.finished(
                        topic,
                        partition,
                        job.generation,
                        job.message.offset(),
                    );
                    point = moved.or(point);
                }
            }
        }
        self.set_buffered(self.buffered.saturating_sub(count));
        if let Some(point) = point {
            self.store(topic, partition, point);
        }
        self.forget_done_keys(topic, partition);
        self.update_parked_gauge();
    }

    /// A lane's event was parked: its key is parked from now on, and what waited behind it
    /// in the lane is parked behind it.
    fn lane_parked(&mut self, key: KeyId, generation: u64, due_at_ms: i64) {
        let waiting: Vec<Job> = self
            .lanes
            .remove(&key)
            .map(|lane| lane.into_iter().map(|(job, _)| job).collect())
            .unwrap_or_default();
        let (topic, partition, record_key) = key;
        let current = self.assignments().is_current(&topic, partition, generation);
        let keys = self
            .parking
            .get_mut(&(topic.clone(), partition))
            .filter(|p| p.generation() == generation && current)
            .and_then(PartitionParking::keys_mut);
        let Some(keys) = keys else {
            // The partition was revoked meanwhile: its new holder reads the parked event.
            self.set_buffered(self.buffered.saturating_sub(waiting.len()));
            return;
        };
        let state = keys.entry(record_key).or_insert(ParkedKeyState {
            rows: 0,
            inserting: 0,
            running: false,
            due: parking::instant_of(due_at_ms),
        });
        state.rows += 1;
        state.due = parking::instant_of(due_at_ms);
        state.inserting += waiting.len();
        if !waiting.is_empty() {
            self.park_behind(&topic, partition, generation, waiting);
        }
        self.update_parked_gauge();
    }

    /// Starts the parked events that are due, reads the parked keys of partitions held but
    /// not read yet, and now and then reads the held ones again; true when the failure
    /// guard tripped.
    fn tend_parked(&mut self) -> bool {
        if self.draining {
            return false;
        }
        let assigned = self.assignments().assigned();
        let refresh = self.last_refresh.elapsed() >= PARKING_REFRESH;
        if refresh {
            self.last_refresh = tokio::time::Instant::now();
        }
        for (topic, partition) in assigned {
            let Some(generation) = self.assignments().current(&topic, partition) else {
                continue;
            };
            let known = self
                .parking
                .get(&(topic.clone(), partition))
                .is_some_and(|p| p.generation() == generation);
            if !known {
                self.parking_known(&topic, partition, generation);
            } else if refresh {
                self.read_parking(&topic, partition, generation, true);
            }
        }
        let now = tokio::time::Instant::now();
        let mut due = Vec::new();
        for ((topic, partition), parking) in &mut self.parking {
            let generation = parking.generation();
            let Some(keys) = parking.keys_mut() else {
                continue;
            };
            for (key, state) in keys.iter_mut() {
                // Records still being parked behind may come before later ones: wait.
                if !state.running && state.rows > 0 && state.inserting == 0 && state.due <= now {
                    state.running = true;
                    due.push((topic.clone(), *partition, generation, key.clone()));
                }
            }
        }
        for (topic, partition, generation, key) in due {
            self.run_parked(topic, partition, generation, key);
        }
        false
    }

    fn run_parked(&mut self, topic: String, partition: i32, generation: u64, key: Vec<u8>) {
        let shared = self.shared.clone();
        let workers = self.workers.clone();
        self.tasks.spawn(async move {
            let ran = run_parked_head(&shared, &workers, &topic, partition, &key).await;
            Done::ParkedRan {
                topic,
                partition,
                generation,
                key,
                ran,
            }
        });
    }

    fn parked_ran(
        &mut self,
        topic: &str,
        partition: i32,
        generation: u64,
        key: Vec<u8>,
        ran: ParkedRun,
    ) -> bool {
        let mut guard_tripped = false;
        if let Some(keys) = self
            .parking
            .get_mut(&(topic.to_string(), partition))
            .filter(|p| p.generation() == generation)
            .and_then(PartitionParking::keys_mut)
            && let Some(state) = keys.get_mut(&key)
        {
            state.running = false;
            match ran {
                ParkedRun::Removed => {
                    state.rows = state.rows.saturating_sub(1);
                    state.due = tokio::time::Instant::now();
                }
                ParkedRun::Rescheduled(due) => state.due = due,
                ParkedRun::Empty => state.rows = 0,
                ParkedRun::Stopped {
                    guard_tripped: tripped,
                } => guard_tripped = tripped,
            }
        }
        self.forget_done_keys(topic, partition);
        self.update_parked_gauge();
        guard_tripped
    }

    /// Keys with nothing parked any more go back to the batches.
    fn forget_done_keys(&mut self, topic: &str, partition: i32) {
        if let Some(keys) = self
            .parking
            .get_mut(&(topic.to_string(), partition))
            .and_then(PartitionParking::keys_mut)
        {
            keys.retain(|_, state| !state.is_done());
        }
    }

    fn update_parked_gauge(&self) {
        let rows: usize = self
            .parking
            .values()
            .filter_map(|p| match p {
                PartitionParking::Loaded { keys, .. } => {
                    Some(keys.values().map(|s| s.rows).sum::<usize>())
                }
                PartitionParking::Loading { .. } => None,
            })
            .sum();
        self.parked_gauge.set(rows as f64);
    }

    fn store(&self, topic: &str, partition: i32, point: i64) {
        let mut offsets = TopicPartitionList::new();
        let stored = offsets
            .add_partition_offset(topic, partition, Offset::Offset(point))
            .and_then(|()| self.consumer.store_offsets(&offsets));
        if let Err(error) = stored {
            // The partition was revoked meanwhile; its new holder will see the event again.
            tracing::debug!(%error, topic, partition, point, "offset not stored");
        }
    }

    /// Lets running batches and lane jobs finish until `deadline`, starts nothing new, and
    /// abandons the rest; their offsets stay uncommitted, so the group delivers them again.
    async fn drain(&mut self, deadline: Duration) {
        self.draining = true;
        let mut dropped = 0;
        for queue in self.partitions.values_mut().flat_map(HashMap::values_mut) {
            dropped += std::mem::take(&mut queue.ready).len();
        }
        for lane in self.lanes.values_mut() {
            dropped += std::mem::take(lane).len();
        }
        self.set_buffered(self.buffered.saturating_sub(dropped));
        let until = tokio::time::Instant::now() + deadline;
        loop {
            tokio::select! {
                joined = self.tasks.join_next() => match joined {
                    Some(Ok(done)) => {
                        self.done(done);
                    }
                    Some(Err(_)) => {}
                    None => break,
                },
                _ = tokio::time::sleep_until(until) => {
                    tracing::warn!(abandoned = self.tasks.len(), "shutdown deadline: abandoning in-flight events");
                    self.tasks.abort_all();
                    while self.tasks.join_next().await.is_some() {}
                    break;
                }
            }
        }
        self.partitions.clear();
        self.lanes.clear();
        self.set_buffered(0);
    }

    fn set_buffered(&mut self, buffered: usize) {
        self.buffered = buffered;
        self.in_flight.set(buffered as f64);
    }
}

/// Runs the first parked event of a key, if it is due, and removes it once handled or
/// dead-lettered.
async fn run_parked_head(
    shared: &Shared,
    workers: &Semaphore,
    topic: &str,
    partition: i32,
    key: &[u8],
) -> ParkedRun {
    let stopped = ParkedRun::Stopped {
        guard_tripped: false,
    };
    let Some(head) = execute::through_outages(shared, "read a parked event", || {
        shared.parked.head(topic, partition, key)
    })
    .await
    else {
        return stopped;
    };
    let Some(head) = head else {
        return ParkedRun::Empty;
    };
    if head.due_at_ms > parking::now_ms() {
        // Parked again meanwhile (by an earlier holder of the partition).
        return ParkedRun::Rescheduled(parking::instant_of(head.due_at_ms));
    }
    let Ok(_permit) = workers.acquire().await else {
        return stopped;
    };
    let message = parking::message_of(&head);
    let resume = parking::resume_of(shared, &head);
    match execute::process(shared, &message, resume).await {
        JobOutcome::Finished => {
            let removed = execute::through_outages(shared, "remove a handled parked event", || {
                shared.parked.remove(topic, partition, head.offset)
            })
            .await;
            // Left parked when the consumer stopped first: it runs again and its handlers
            // skip it by their records.
            if removed.is_some() {
                ParkedRun::Removed
            } else {
                stopped
            }
        }
        JobOutcome::Parked { due_at_ms } => ParkedRun::Rescheduled(parking::instant_of(due_at_ms)),
        JobOutcome::Abandoned => stopped,
        JobOutcome::GuardTripped => ParkedRun::Stopped {
            guard_tripped: true,
        },
    }
}
