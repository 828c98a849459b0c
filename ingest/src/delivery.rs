//! A Kafka producer whose delivery reports are served by a task on the async runtime.
//!
//! librdkafka puts every delivery report on its main event queue, which someone must poll.
//! rust-rdkafka's `FutureProducer` runs a thread of its own for that. On one core it is one
//! more thread to switch to and back from for every batch of reports, and its loop spins for
//! the last millisecond of every 100 ms wait (it rounds the time left down to whole
//! milliseconds and then polls with a timeout of zero until the deadline has passed). Here
//! librdkafka instead writes a byte to a socket when the queue turns non-empty, and a task on
//! the runtime drains the queue and completes each waiting send: no thread, no spin.
//!
//! librdkafka's queue wake-up is the one part of its C API rust-rdkafka does not wrap, so
//! this module holds the project's only `unsafe` code: five calls into librdkafka and the
//! queue handle's `Send` and `Sync`, each with its safety argument.

use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream as SignalSocket;
use std::sync::{Arc, Weak};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::bindings as rdsys;
use rdkafka::client::Client;
use rdkafka::config::{ClientConfig, FromClientConfigAndContext, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{OwnedHeaders, ToBytes};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::util::Timeout;
use tokio::net::UnixStream;
use tokio::sync::oneshot;
use tokio::time::{Interval, MissedTickBehavior};

/// How often the queue is looked at without a signal. Every wake-up is signalled, so this
/// only bounds what a lost one could cost; it is the interval `FutureProducer` polls at.
const UNSIGNALLED_POLL: Duration = Duration::from_millis(100);

/// Events served before the task lets other tasks run. One event reports a whole batch.
const EVENTS_PER_ROUND: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum ProducerSetupError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error("the producer must be created on a Tokio runtime, which serves its delivery reports")]
    NoRuntime,
    #[error("cannot create the delivery-report signal socket: {0}")]
    Signal(#[from] std::io::Error),
    #[error("librdkafka returned no main event queue")]
    NoQueue,
}

/// What a send's caller waits on: the broker's acknowledgement, or why there is none.
pub type Delivery = oneshot::Receiver<Result<(), KafkaError>>;

/// The client context `C` of the caller, plus the delivery of each report to its sender.
pub struct ReportingContext<C> {
    inner: C,
}

impl<C: ClientContext> ClientContext for ReportingContext<C> {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.inner.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.inner.error(error, reason);
    }
}

impl<C: ClientContext> ProducerContext for ReportingContext<C> {
    type DeliveryOpaque = Box<oneshot::Sender<Result<(), KafkaError>>>;

    fn delivery(&self, result: &DeliveryResult<'_>, ack: Self::DeliveryOpaque) {
        // A sender whose caller stopped waiting (its deadline passed) has no receiver; the
        // record's fate is then only counted by the broker.
        let _ = ack.send(match result {
            Ok(_) => Ok(()),
            Err((err, _)) => Err(err.clone()),
        });
    }
}

/// A durable producer shared by clones; its reports are served while any clone lives.
pub struct ReportingProducer<C: ClientContext + 'static> {
    shared: Arc<Shared<C>>,
}

impl<C: ClientContext + 'static> Clone for ReportingProducer<C> {
    fn clone(&self) -> Self {
        ReportingProducer {
            shared: self.shared.clone(),
        }
    }
}

struct Shared<C: ClientContext + 'static> {
    // Fields drop in this order, after `Drop::drop` has turned the signal off: the queue
    // reference before the producer (whose drop destroys the client), the socket last.
    queue: MainQueue,
    producer: BaseProducer<ReportingContext<C>>,
    /// The end librdkafka writes to, open for as long as the signal is on.
    _signal: SignalSocket,
}

impl<C: ClientContext + 'static> Drop for Shared<C> {
    fn drop(&mut self) {
        // SAFETY: the queue reference is live (it is released after this, when `queue`
        // drops); a descriptor of -1 turns the signal off, so librdkafka never writes to the
        // socket's descriptor number once it is closed and possibly reused.
        unsafe { rdsys::rd_kafka_queue_io_event_enable(self.queue.0, -1, std::ptr::null(), 0) };
    }
}

/// A reference to a client's main event queue, released on drop.
struct MainQueue(*mut rdsys::rd_kafka_queue_t);

// SAFETY: librdkafka's queues are locked internally and may be used from any thread; the
// pointer is only handed to librdkafka.
unsafe impl Send for MainQueue {}
// SAFETY: as above.
unsafe impl Sync for MainQueue {}

impl MainQueue {
    fn len(&self) -> usize {
        // SAFETY: the reference is live for as long as `self`.
        unsafe { rdsys::rd_kafka_queue_length(self.0) }
    }
}

impl Drop for MainQueue {
    fn drop(&mut self) {
        // SAFETY: the reference came from `rd_kafka_queue_get_main` and is released once.
        unsafe { rdsys::rd_kafka_queue_destroy(self.0) };
    }
}

impl<C: ClientContext + 'static> ReportingProducer<C> {
    /// Creates the producer and spawns the task that serves its reports on the current
    /// runtime.
    pub fn create(config: &ClientConfig, context: C) -> Result<Self, ProducerSetupError> {
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| ProducerSetupError::NoRuntime)?;
        let producer =
            BaseProducer::from_config_and_context(config, ReportingContext { inner: context })?;
        let (signal, wake) = SignalSocket::pair()?;
        // librdkafka writes from its own threads and must never block on a full socket.
        signal.set_nonblocking(true)?;
        wake.set_nonblocking(true)?;
        let wake = {
            let _entered = runtime.enter();
            UnixStream::from_std(wake)?
        };
        // SAFETY: the client pointer is live; the call returns a new reference to its main
        // queue (the one `BaseProducer::poll` serves), which `MainQueue` releases.
        let queue = unsafe { rdsys::rd_kafka_queue_get_main(producer.client().native_ptr()) };
        if queue.is_null() {
            return Err(ProducerSetupError::NoQueue);
        }
        let queue = MainQueue(queue);
        const PAYLOAD: [u8; 1] = [1];
        // SAFETY: the queue reference is live; librdkafka copies the payload; the descriptor
        // stays open until `Shared::drop` has turned the signal off again.
        unsafe {
            rdsys::rd_kafka_queue_io_event_enable(
                queue.0,
                signal.as_raw_fd(),
                PAYLOAD.as_ptr().cast(),
                PAYLOAD.len(),
            )
        };
        let shared = Arc::new(Shared {
            queue,
            producer,
            _signal: signal,
        });
        runtime.spawn(serve_reports(Arc::downgrade(&shared), wake));
        Ok(ReportingProducer { shared })
    }

    /// Queues a record; the returned [`Delivery`] completes with the broker's answer. A full
    /// local queue fails at once.
    pub fn send<K, P>(
        &self,
        topic: &str,
        key: &K,
        payload: &P,
        headers: OwnedHeaders,
    ) -> Result<Delivery, KafkaError>
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        let (ack, delivery) = oneshot::channel();
        let record = BaseRecord::with_opaque_to(topic, Box::new(ack))
            .key(key)
            .payload(payload)
            .headers(headers);
        self.shared
            .producer
            .send(record)
            .map_err(|(err, _record)| err)?;
        Ok(delivery)
    }

    pub fn client(&self) -> &Client<ReportingContext<C>> {
        self.shared.producer.client()
    }

    /// Blocks until every queued record is delivered or `timeout` passes.
    pub fn flush(&self, timeout: Duration) -> KafkaResult<()> {
        self.shared.producer.flush(Timeout::After(timeout))
    }
}

impl<C: ClientContext + 'static> Shared<C> {
    /// Serves the events the queue holds; false when it stopped at the bound with more left.
    fn serve_ready(&self) -> bool {
        for _ in 0..EVENTS_PER_ROUND {
            if self.queue.len() == 0 {
                return true;
            }
            // One event, without waiting.
            self.producer.poll(Duration::ZERO);
        }
        self.queue.len() == 0
    }
}

/// Drains the queue, then waits for librdkafka's signal (or the unsignalled interval), until
/// the producer is gone.
async fn serve_reports<C: ClientContext + 'static>(shared: Weak<Shared<C>>, wake: UnixStream) {
    let mut interval = unsignalled_interval();
    let mut signalled = true;
    loop {
        let Some(producer) = shared.upgrade() else {
            return;
        };
        let drained = producer.serve_ready();
        drop(producer);
        if !drained {
            tokio::task::yield_now().await;
            continue;
        }
        if signalled {
            tokio::select! {
                ready = wake.readable() => if ready.is_err() { signalled = false },
                _ = interval.tick() => {}
            }
        } else {
            interval.tick().await;
        }
        // The queue is served next, which re-arms librdkafka's signal; the bytes it wrote
        // are only the wake-up.
        let mut bytes = [0u8; 64];
        while signalled {
            match wake.try_read(&mut bytes) {
                // The producer is gone, and its end of the socket with it.
                Ok(0) => return,
                Ok(_) => continue,
                Err(err) if err.kind() == ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == ErrorKind::Interrupted => continue,
                Err(err) => {
                    tracing::error!(error = %err, "the delivery-report signal failed; polling every 100 ms instead");
                    signalled = false;
                }
            }
        }
    }
}

fn unsignalled_interval() -> Interval {
    let mut interval = tokio::time::interval(UNSIGNALLED_POLL);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    interval
}

#[cfg(test)]
mod tests;
