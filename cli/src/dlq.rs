//! `tributary dlq list` and `tributary dlq replay`: what is on the dead-letter topics, and
//! putting selected events back on their origin topic.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use tributary_common::Config;
use tributary_processor::dlq::{self, DeadLetter, Selection};

/// How long reading a dead-letter topic may take.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Subcommand)]
pub enum DlqCommand {
    /// List dead-lettered events, then counts by reason, error and event type.
    List {
        #[command(flatten)]
        topics: TopicArgs,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Re-publish selected dead-lettered events to their origin topic.
    Replay {
        #[command(flatten)]
        topics: TopicArgs,
        /// Only this event id (`ce_id`); repeat for several.
        #[arg(long = "event-id")]
        event_ids: Vec<String>,
        /// Only event types matching this pattern (`*` wildcards), e.g. "page_*".
        #[arg(long)]
        event_type: Option<String>,
        /// Only events whose error contains this text.
        #[arg(long)]
        error: Option<String>,
        /// Only this reason: handler, permanent or undecodable.
        #[arg(long)]
        reason: Option<String>,
        /// Take every dead-lettered event (needed when no other selection is given).
        #[arg(long)]
        all: bool,
        /// Show what would be replayed, publish nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Args)]
pub struct TopicArgs {
    /// The dead-letter topic; default: each processor topic followed by the DLQ suffix.
    #[arg(long)]
    topic: Option<String>,
}

impl TopicArgs {
    fn topics(&self, config: &Config) -> Vec<String> {
        match &self.topic {
            Some(topic) => vec![topic.clone()],
            None => config
                .processor_topics
                .iter()
                .map(|t| config.dead_letter_topic(t))
                .collect(),
        }
    }
}

pub async fn run(config: &Config, command: DlqCommand) -> anyhow::Result<()> {
    match command {
        DlqCommand::List { topics, json } => {
            for topic in topics.topics(config) {
                let letters = dlq::list(config, &topic, READ_TIMEOUT)
                    .await
                    .with_context(|| format!("reading {topic}"))?;
                if json {
                    for letter in &letters {
                        println!("{}", serde_json::to_string(letter)?);
                    }
                } else {
                    print_letters(&topic, &letters);
                }
            }
        }
        DlqCommand::Replay {
            topics,
            event_ids,
            event_type,
            error,
            reason,
            all,
            dry_run,
        } => {
            let selection = Selection {
                event_ids,
                event_type,
                error_contains: error,
                reason,
            };
            if selection.is_empty() && !all {
                bail!(
                    "select events with --event-id, --event-type, --error or --reason, or pass --all"
                );
            }
            for topic in topics.topics(config) {
                let report = dlq::replay(config, &topic, &selection, dry_run, READ_TIMEOUT)
                    .await
                    .with_context(|| format!("replaying from {topic}"))?;
                for letter in &report.selected {
                    println!(
                        "{} {} -> {}",
                        if dry_run { "would replay" } else { "replayed" },
                        letter.event_id.as_deref().unwrap_or("-"),
                        letter
                            .origin_topic
                            .as_deref()
                            .unwrap_or("(no origin: skipped)")
                    );
                }
                println!(
                    "{topic}: {} selected, {} replayed{}",
                    report.selected.len(),
                    report.replayed,
                    if dry_run { " (dry run)" } else { "" }
                );
                if report.without_origin > 0 {
                    println!(
                        "{} without an origin topic header were left alone",
                        report.without_origin
                    );
                }
            }
        }
    }
    Ok(())
}

fn print_letters(topic: &str, letters: &[DeadLetter]) {
    println!("{topic}: {} dead-lettered event(s)", letters.len());
    if letters.is_empty() {
        return;
    }
    println!(
        "{:<10} {:<36} {:<22} {:<24} {:<12} {:<20} {:>3} ERROR",
        "POSITION", "EVENT ID", "EVENT TYPE", "ORIGIN", "REASON", "HANDLER", "TRY"
    );
    let text = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    for l in letters {
        let origin = match (&l.origin_topic, l.origin_partition, l.origin_offset) {
            (Some(t), Some(p), Some(o)) => format!("{t}/{p}@{o}"),
            _ => "-".into(),
        };
        println!(
            "{:<10} {:<36} {:<22} {:<24} {:<12} {:<20} {:>3} {}",
            format!("{}@{}", l.partition, l.offset),
            text(&l.event_id),
            text(&l.event_type),
            origin,
            text(&l.reason),
            text(&l.handler),
            l.attempts.map_or("-".into(), |a| a.to_string()),
            text(&l.error)
        );
    }
    println!("\nby reason, error and event type:");
    for ((reason, error, event_type), count) in dlq::summarize(letters) {
        println!("{count:>6}  {reason:<12} {event_type:<22} {error}");
    }
}
