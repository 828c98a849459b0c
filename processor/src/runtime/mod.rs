//! The consumer runtime: one dispatcher reads records and hands them to workers so that
//! records with the same key run one after another and different keys run concurrently, up
//! to `processor_concurrency`; finished offsets are stored for librdkafka's auto-commit.

mod consumer;
mod execute;
mod guard;
mod offsets;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tributary_common::Config;
use tributary_common::shutdown::Shutdown;

pub(crate) use execute::Shared;
pub(crate) use guard::FailureGuard;
pub(crate) use offsets::Assignments;

use crate::ProcessorError;
use crate::observe::{EVENTS_CONSUMED, IN_FLIGHT};
use consumer::{RuntimeContext, consumer_config};
use execute::JobOutcome;

/// Records received but not finished, per unit of concurrency: enough to keep workers busy
/// when keys are unevenly spread, and a bound on memory.
const BUFFER_PER_WORKER: usize = 16;

/// Records of one key on one partition: they must run in order.
type KeyId = (String, i32, Vec<u8>);

struct Job {
    message: OwnedMessage,
    generation: u64,
}

struct Finished {
    key: KeyId,
    offset: i64,
    generation: u64,
    outcome: JobOutcome,
}

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
        queues: HashMap::new(),
        buffered: 0,
    };
    let max_buffered = concurrency.saturating_mul(BUFFER_PER_WORKER);
    let stop = loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break Stop::Shutdown,
            Some(joined) = dispatcher.tasks.join_next() => {
                match joined {
                    Ok(finished) => {
                        if dispatcher.finish(finished, true) {
                            break Stop::GuardTripped;
                        }
                    }
                    Err(error) => {
                        shared.stopping.cancel();
                        return Err(ProcessorError::Worker(error.to_string()));
                    }
                }
            }
            received = consumer.recv(), if dispatcher.buffered < max_buffered => match received {
                Ok(message) => dispatcher.receive(message.detach()),
                Err(error) => tracing::warn!(%error, "kafka consumer error"),
            },
        }
    };
    shared.stopping.cancel();
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

struct Dispatcher<'c> {
    shared: Arc<Shared>,
    consumer: &'c StreamConsumer<RuntimeContext>,
    assignments: Arc<Mutex<Assignments>>,
    workers: Arc<Semaphore>,
    tasks: JoinSet<Finished>,
    /// Keys with a running job, and what waits behind it.
    queues: HashMap<KeyId, VecDeque<Job>>,
    buffered: usize,
}

impl Dispatcher<'_> {
    fn assignments(&self) -> std::sync::MutexGuard<'_, Assignments> {
        self.assignments
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn receive(&mut self, message: OwnedMessage) {
        metrics::counter!(EVENTS_CONSUMED, "topic" => message.topic().to_string()).increment(1);
        let generation =
            self.assignments()
                .received(message.topic(), message.partition(), message.offset());
        self.set_buffered(self.buffered + 1);
        let key: KeyId = (
            message.topic().to_string(),
            message.partition(),
            message.key().unwrap_or_default().to_vec(),
        );
        let job = Job {
            message,
            generation,
        };
        match self.queues.get_mut(&key) {
            Some(waiting) => waiting.push_back(job),
            None => {
                self.queues.insert(key.clone(), VecDeque::new());
                self.spawn(key, job);
            }
        }
    }

    /// Books a finished job; true when the failure guard tripped.
    fn finish(&mut self, finished: Finished, start_next: bool) -> bool {
        self.set_buffered(self.buffered.saturating_sub(1));
        let (topic, partition, _) = &finished.key;
        match finished.outcome {
            JobOutcome::Finished => {
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
            // Its offset stays pending, so nothing behind it on its key may run either.
            JobOutcome::Abandoned | JobOutcome::GuardTripped => {
                self.drop_queue(&finished.key);
                return finished.outcome == JobOutcome::GuardTripped;
            }
        }
        if start_next {
            self.start_next(finished.key);
        }
        false
    }

    /// Starts the next job of `key`, skipping jobs whose partition was revoked meanwhile.
    fn start_next(&mut self, key: KeyId) {
        loop {
            let Some(job) = self.queues.get_mut(&key).and_then(VecDeque::pop_front) else {
                self.queues.remove(&key);
                return;
            };
            let current = self.assignments().is_current(
                job.message.topic(),
                job.message.partition(),
                job.generation,
            );
            if current {
                self.spawn(key, job);
                return;
            }
            self.set_buffered(self.buffered.saturating_sub(1));
        }
    }

    fn drop_queue(&mut self, key: &KeyId) {
        if let Some(waiting) = self.queues.remove(key) {
            self.set_buffered(self.buffered.saturating_sub(waiting.len()));
        }
    }

    fn spawn(&mut self, key: KeyId, job: Job) {
        let shared = self.shared.clone();
        let workers = self.workers.clone();
        self.tasks.spawn(async move {
            let outcome = match workers.acquire_owned().await {
                Ok(_permit) => execute::process(&shared, &job.message).await,
                Err(_) => JobOutcome::Abandoned,
            };
            Finished {
                key,
                offset: job.message.offset(),
                generation: job.generation,
                outcome,
            }
        });
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

    /// Lets running jobs finish until `deadline`, starts nothing new, and abandons the
    /// rest; their offsets stay uncommitted, so the group delivers them again.
    async fn drain(&mut self, deadline: Duration) {
        let waiting: Vec<KeyId> = self.queues.keys().cloned().collect();
        for key in waiting {
            if let Some(queue) = self.queues.get_mut(&key) {
                let dropped = std::mem::take(queue).len();
                self.set_buffered(self.buffered.saturating_sub(dropped));
            }
        }
        let until = tokio::time::Instant::now() + deadline;
        loop {
            tokio::select! {
                joined = self.tasks.join_next() => match joined {
                    Some(Ok(finished)) => {
                        self.finish(finished, false);
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
        self.queues.clear();
        self.set_buffered(0);
    }

    fn set_buffered(&mut self, buffered: usize) {
        self.buffered = buffered;
        metrics::gauge!(IN_FLIGHT).set(buffered as f64);
    }
}
