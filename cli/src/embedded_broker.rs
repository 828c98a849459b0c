//! `tributary embedded-broker`: the in-memory Kafka-protocol broker of `tributary dev` as a
//! process of its own, so benchmarks and local experiments can run the real services against
//! it without a Kafka installation. It keeps nothing across restarts.

use anyhow::Context;
use tributary_common::routing::dead_letter_topic;
use tributary_devkit::EmbeddedKafka;

pub async fn run(topics: &[String], partitions: i32, dlq_suffix: &str) -> anyhow::Result<()> {
    let broker = EmbeddedKafka::start(1).context("starting the embedded broker")?;
    for topic in topics {
        for name in [topic.clone(), dead_letter_topic(topic, dlq_suffix)] {
            broker
                .create_topic(&name, partitions)
                .with_context(|| format!("creating topic {name}"))?;
        }
    }
    // The first line is the bootstrap address, for scripts to read.
    println!("{}", broker.bootstrap_servers());
    eprintln!(
        "embedded broker (in memory, nothing kept across restarts) on {}; topics {} with {partitions} partitions each, and their {dlq_suffix} topics; Ctrl-C stops it",
        broker.bootstrap_servers(),
        topics.join(", ")
    );
    tributary_common::shutdown::on_signals().cancelled().await;
    drop(broker);
    Ok(())
}
