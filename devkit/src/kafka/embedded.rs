//! An in-memory Kafka-protocol broker (librdkafka's mock cluster) owned by a thread of its own:
//! the broker of `tributary dev` and of the tests.
//!
//! The mock cluster is `!Send`, so it lives on a dedicated thread and is driven through a
//! channel; the handle is `Send + Sync`. Its brokers listen on loopback ports, so any Kafka
//! client (a child process too) can use [`EmbeddedKafka::bootstrap_servers`]. It keeps
//! everything in memory: nothing survives the process.

use std::sync::Mutex;
use std::sync::mpsc::{Sender, channel};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedKafkaError {
    #[error("the embedded broker could not start: {0}")]
    Start(String),
    #[error("the embedded broker has stopped")]
    Stopped,
    #[error("the embedded broker refused: {0}")]
    Refused(String),
}

type Reply = Sender<Result<(), String>>;

enum Command {
    CreateTopic(String, i32, Reply),
    BrokerDown(Reply),
    BrokerUp(Reply),
    RequestErrors(RDKafkaApiKey, Vec<RDKafkaRespErr>, Reply),
    ClearRequestErrors(RDKafkaApiKey, Reply),
    RoundTripTime(Duration, Reply),
}

/// A running embedded cluster; it stops when the value is dropped.
pub struct EmbeddedKafka {
    bootstrap: String,
    commands: Mutex<Option<Sender<Command>>>,
    thread: Option<JoinHandle<()>>,
}

impl EmbeddedKafka {
    /// Starts a cluster of `brokers` brokers (ids 1..=brokers).
    pub fn start(brokers: i32) -> Result<EmbeddedKafka, EmbeddedKafkaError> {
        let (command_tx, command_rx) = channel::<Command>();
        let (ready_tx, ready_rx) = channel::<Result<String, String>>();
        let thread = std::thread::Builder::new()
            .name("embedded-kafka".into())
            .spawn(move || {
                let cluster = match MockCluster::new(brokers) {
                    Ok(cluster) => cluster,
                    Err(err) => {
                        let _ = ready_tx.send(Err(err.to_string()));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                let done = |reply: Reply, result: Result<(), KafkaError>| {
                    let _ = reply.send(result.map_err(|e| e.to_string()));
                };
                // Ends when every sender is gone: the handle was dropped.
                for command in command_rx {
                    match command {
                        Command::CreateTopic(topic, partitions, reply) => {
                            done(reply, cluster.create_topic(&topic, partitions, 1))
                        }
                        Command::BrokerDown(reply) => done(reply, cluster.broker_down(-1)),
                        Command::BrokerUp(reply) => done(reply, cluster.broker_up(-1)),
                        Command::RequestErrors(api, errors, reply) => {
                            cluster.request_errors(api, &errors);
                            done(reply, Ok(()))
                        }
                        Command::ClearRequestErrors(api, reply) => {
                            cluster.clear_request_errors(api);
                            done(reply, Ok(()))
                        }
                        Command::RoundTripTime(delay, reply) => {
                            done(reply, cluster.broker_round_trip_time(-1, delay))
                        }
                    }
                }
            })
            .map_err(|e| EmbeddedKafkaError::Start(e.to_string()))?;
        let bootstrap = ready_rx
            .recv()
            .map_err(|_| EmbeddedKafkaError::Start("the broker thread ended".into()))?
            .map_err(EmbeddedKafkaError::Start)?;
        Ok(EmbeddedKafka {
            bootstrap,
            commands: Mutex::new(Some(command_tx)),
            thread: Some(thread),
        })
    }

    /// `host:port,...` of the brokers, for `bootstrap.servers`.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    fn call(&self, make: impl FnOnce(Reply) -> Command) -> Result<(), EmbeddedKafkaError> {
        let (reply_tx, reply_rx) = channel();
        {
            let commands = self
                .commands
                .lock()
                .map_err(|_| EmbeddedKafkaError::Stopped)?;
            commands
                .as_ref()
                .ok_or(EmbeddedKafkaError::Stopped)?
                .send(make(reply_tx))
                .map_err(|_| EmbeddedKafkaError::Stopped)?;
        }
        reply_rx
            .recv()
            .map_err(|_| EmbeddedKafkaError::Stopped)?
            .map_err(EmbeddedKafkaError::Refused)
    }

    /// Creates `topic` (the mock cluster has no CreateTopics API).
    pub fn create_topic(&self, topic: &str, partitions: i32) -> Result<(), EmbeddedKafkaError> {
        self.call(|reply| Command::CreateTopic(topic.to_string(), partitions, reply))
    }

    /// Disconnects every broker and refuses new connections.
    pub fn broker_down(&self) -> Result<(), EmbeddedKafkaError> {
        self.call(Command::BrokerDown)
    }

    pub fn broker_up(&self) -> Result<(), EmbeddedKafkaError> {
        self.call(Command::BrokerUp)
    }

    /// The next requests of kind `api` fail with `errors`, one each, in order.
    pub fn request_errors(
        &self,
        api: RDKafkaApiKey,
        errors: &[RDKafkaRespErr],
    ) -> Result<(), EmbeddedKafkaError> {
        self.call(|reply| Command::RequestErrors(api, errors.to_vec(), reply))
    }

    pub fn clear_request_errors(&self, api: RDKafkaApiKey) -> Result<(), EmbeddedKafkaError> {
        self.call(|reply| Command::ClearRequestErrors(api, reply))
    }

    /// Delays every broker's answers by `delay`.
    pub fn round_trip_time(&self, delay: Duration) -> Result<(), EmbeddedKafkaError> {
        self.call(|reply| Command::RoundTripTime(delay, reply))
    }
}

impl Drop for EmbeddedKafka {
    fn drop(&mut self) {
        if let Ok(mut commands) = self.commands.lock() {
            commands.take();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_created_and_the_handle_reports_a_stopped_broker_after_drop() {
        let kafka = EmbeddedKafka::start(1).expect("starts");
        assert!(kafka.bootstrap_servers().contains(':'));
        kafka.create_topic("t", 3).expect("topic created");
        kafka.broker_down().expect("down");
        kafka.broker_up().expect("up");
        if let Ok(mut commands) = kafka.commands.lock() {
            commands.take();
        }
        assert!(matches!(
            kafka.create_topic("u", 1),
            Err(EmbeddedKafkaError::Stopped)
        ));
    }
}
