//! No loss under chaos: 10,000 webhooks for 50 tenants from careful senders while the
//! broker goes down and up at random, produce requests fail at random, and the processor
//! is killed with SIGKILL and restarted twice.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tributary_devkit::harness::{Delivery, skip_without_fault_injection};
use tributary_devkit::kafka::header_text;
use tributary_tests::verdict::{comment_calls, judge};
use tributary_tests::world::{self, start_processor, tenant_lists, wait_handled};

const TENANTS: usize = 50;
const PER_TENANT: u64 = 200;
/// Each sender owns two tenants and sends their events one after another.
const SENDERS: usize = 25;
/// A careful sender gives an event up after this many tries.
const ATTEMPTS: u32 = 120;
const KILLS: usize = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_acknowledged_event_is_lost_under_chaos() {
    if skip_without_fault_injection("no_acknowledged_event_is_lost_under_chaos") {
        return;
    }
    let world = world::start(6).await;
    let ingest = Arc::new(
        world
            .ingest(&[("TRIBUTARY_INGEST_MAX_IN_FLIGHT", "256")])
            .await,
    );
    let tenants = world.install_tenants(&ingest, "chaos", TENANTS).await;
    let processor_settings = [("TRIBUTARY_PROCESSOR_CONCURRENCY", "32")];
    let mut processor = start_processor(&world, &processor_settings);

    let total = TENANTS as u64 * PER_TENANT;
    let done = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for owned in tenants.chunks(TENANTS / SENDERS) {
        let owned = owned.to_vec();
        let ingest = ingest.clone();
        senders.push(tokio::spawn(async move {
            let mut deliveries: Vec<Delivery> = Vec::new();
            for sequence in 0..PER_TENANT {
                for tenant in &owned {
                    deliveries.push(ingest.deliver(tenant, sequence, ATTEMPTS).await);
                }
            }
            deliveries
        }));
    }
    let all_sent = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut deliveries = Vec::new();
            for sender in senders {
                deliveries.extend(sender.await.expect("sender"));
            }
            done.store(true, Ordering::SeqCst);
            deliveries
        })
    };

    // Chaos while the senders run; the kills come when the processor is a third and two
    // thirds through, so that events are in flight.
    let mut rng = StdRng::seed_from_u64(7);
    let (mut outages, mut failed_produces) = (0, 0);
    let mut kill_marks = Vec::new();
    let (mut last_called, mut idle_rounds) = (0, 0);
    while !done.load(Ordering::SeqCst) || kill_marks.len() < KILLS {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(100..500))).await;
        let called = world.confluence.hits();
        // Everything sent is handled and a kill is still due: nothing left to kill it in.
        idle_rounds = if called == last_called {
            idle_rounds + 1
        } else {
            0
        };
        last_called = called;
        if done.load(Ordering::SeqCst) && idle_rounds > 60 {
            break;
        }
        if kill_marks.len() < KILLS && called >= (kill_marks.len() as u64 + 1) * total / 3 {
            processor.kill();
            // Calls the dead processor had sent are answered by now.
            tokio::time::sleep(Duration::from_millis(300)).await;
            kill_marks.push(world.confluence.hits());
            processor = start_processor(&world, &processor_settings);
            continue;
        }
        if done.load(Ordering::SeqCst) {
            continue;
        }
        match rng.gen_range(0..3) {
            0 => {
                world.broker_down().await;
                tokio::time::sleep(Duration::from_millis(rng.gen_range(200..1500))).await;
                world.broker_up().await;
                outages += 1;
            }
            1 => {
                let n = rng.gen_range(1..6);
                world.fail_produce_requests(n).await;
                failed_produces += n;
            }
            _ => {}
        }
    }
    let deliveries = all_sent.await.expect("senders");
    let acknowledged: Vec<String> = deliveries
        .iter()
        .filter_map(|d| d.event_id.clone())
        .collect();
    let retried = deliveries.iter().filter(|d| d.attempts > 1).count();

    let pool = world.pool().await;
    let handled = wait_handled(&pool, &acknowledged, Duration::from_secs(180)).await;
    let lists = tenant_lists(&pool).await;
    let calls = world.confluence.calls();
    let per_event = comment_calls(&calls);
    let findings = judge(&deliveries, &handled, &lists, &per_event);

    println!(
        "chaos: sent={total} acknowledged={} handled={} duplicated_calls={} lost={} \
         (senders retried {retried} events; {outages} broker outages, {failed_produces} failed \
         produce requests, {} processor kills)",
        findings.acknowledged,
        findings.handled,
        findings.duplicated_calls,
        findings.lost.len(),
        kill_marks.len()
    );
    let log = processor.log_tail(30);
    assert!(findings.acknowledged > 0, "nothing was acknowledged");
    // Where a lost event went missing: between the ingest's 2xx and the broker's log, or
    // between the log and the processor's records.
    let on_topic = if findings.lost.is_empty() {
        0
    } else {
        let logged: HashSet<String> = world
            .records(world::EVENTS_TOPIC)
            .await
            .iter()
            .filter_map(|message| header_text(message, "ce_id"))
            .collect();
        findings
            .lost
            .iter()
            .filter(|id| logged.contains(*id))
            .count()
    };
    assert!(
        findings.lost.is_empty(),
        "lost: {:?} ({on_topic} of {} are on the events topic; the rest never reached it)\n{log}",
        &findings.lost[..findings.lost.len().min(20)],
        findings.lost.len()
    );
    assert!(
        findings.effect_errors.is_empty(),
        "effects: {:?}",
        &findings.effect_errors[..findings.effect_errors.len().min(20)]
    );
    assert!(
        findings.order_errors.is_empty(),
        "order: {:?}",
        findings.order_errors
    );
    assert!(
        findings.uncalled.is_empty(),
        "never called Confluence: {:?}",
        findings.uncalled
    );
    // A repeated call is an event the killed processor had called Confluence for but not
    // yet recorded as handled: its first call comes before a kill, its last after.
    for (id, positions) in &findings.duplicated {
        let (first, last) = (positions[0], positions[positions.len() - 1]);
        assert!(
            kill_marks.iter().any(|&mark| first < mark && mark <= last),
            "{id} was called at {positions:?}, not across a kill at {kill_marks:?}"
        );
    }
    let refused: Vec<_> = calls.iter().filter(|c| !c.verdict.is_accepted()).collect();
    assert!(
        refused.is_empty(),
        "Confluence refused calls: {:?}",
        &refused[..refused.len().min(5)]
    );

    let status = processor.terminate(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "clean stop: {status:?}\n{}",
        processor.log_tail(30)
    );
}
