//! The Kafka consumer: its settings and the callbacks that keep offsets and lag in step
//! with the group's assignments.

use std::sync::{Arc, Mutex, PoisonError};

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::statistics::Statistics;
use tributary_common::Config;
use tributary_common::kafka::manual_consumer_config;

use super::offsets::Assignments;
use crate::observe::CONSUMER_LAG;

/// How often librdkafka reports statistics, which carry the consumer lag.
const STATS_INTERVAL_MS: &str = "5000";

pub(crate) fn consumer_config(config: &Config) -> ClientConfig {
    let mut client = manual_consumer_config(config, &config.processor_group_id);
    client
        .set(
            "auto.commit.interval.ms",
            config.processor_commit_interval_ms.to_string(),
        )
        .set("statistics.interval.ms", STATS_INTERVAL_MS);
    client
}

pub(crate) struct RuntimeContext {
    pub assignments: Arc<Mutex<Assignments>>,
}

impl RuntimeContext {
    fn assignments(&self) -> std::sync::MutexGuard<'_, Assignments> {
        self.assignments
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl ClientContext for RuntimeContext {
    fn stats(&self, statistics: Statistics) {
        for (topic, stats) in &statistics.topics {
            for (partition, p) in &stats.partitions {
                // Partition -1 is librdkafka's internal unassigned queue.
                if *partition >= 0 && p.desired && p.consumer_lag >= 0 {
                    metrics::gauge!(CONSUMER_LAG, "topic" => topic.clone(), "partition" => partition.to_string())
                        .set(p.consumer_lag as f64);
                }
            }
        }
    }
}

impl ConsumerContext for RuntimeContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            // Hand over what finished before another consumer takes these partitions.
            if let Err(error) = consumer.commit_consumer_state(CommitMode::Sync) {
                tracing::debug!(%error, "commit on revoke");
            }
            let mut assignments = self.assignments();
            for p in partitions.elements() {
                assignments.revoke(p.topic(), p.partition());
                // The new holder reports this partition's lag from now on.
                metrics::gauge!(CONSUMER_LAG, "topic" => p.topic().to_string(), "partition" => p.partition().to_string())
                    .set(0.0);
            }
            tracing::info!(partitions = partitions.count(), "partitions revoked");
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => {
                let mut assignments = self.assignments();
                for p in partitions.elements() {
                    assignments.assign(p.topic(), p.partition());
                }
                tracing::info!(partitions = partitions.count(), "partitions assigned");
            }
            Rebalance::Error(error) => tracing::warn!(%error, "rebalance failed"),
            Rebalance::Revoke(_) => {}
        }
    }
}
