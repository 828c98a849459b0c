//! Reading the end state of a run: what was handled, in which order, with which effects, and
//! which Confluence calls each event caused.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;
use tributary_devkit::confluence::Call;

use tributary_devkit::harness::Delivery;

/// Successful comment calls per event id, as (arrival position) lists.
pub fn comment_calls(calls: &[Call]) -> HashMap<String, Vec<u64>> {
    let mut per_event: HashMap<String, Vec<u64>> = HashMap::new();
    for call in calls {
        if call.method != "POST" || !call.verdict.is_accepted() || call.status != 200 {
            continue;
        }
        let Ok(body) = serde_json::from_slice::<Value>(&call.body) else {
            continue;
        };
        // A comment made through v2, or through v1 as the client's add_comment makes it.
        let value = if call.target.ends_with("/api/v2/footer-comments") {
            body.pointer("/body/value")
        } else if call.target.contains("/rest/api/content")
            && body.get("type").and_then(Value::as_str) == Some("comment")
        {
            body.pointer("/body/storage/value")
        } else {
            None
        };
        if let Some(id) = value
            .and_then(Value::as_str)
            .and_then(|v| v.strip_prefix("<p>"))
            .and_then(|v| v.strip_suffix("</p>"))
        {
            per_event.entry(id.to_string()).or_default().push(call.seq);
        }
    }
    per_event
}

/// What a run's end state says about the promises.
#[derive(Debug, Default)]
pub struct Findings {
    pub acknowledged: usize,
    pub handled: usize,
    pub lost: Vec<String>,
    /// Events whose state effect is missing or repeated.
    pub effect_errors: Vec<String>,
    /// Tenants whose acknowledged events were handled out of order.
    pub order_errors: Vec<String>,
    /// Handled events without a successful Confluence call.
    pub uncalled: Vec<String>,
    /// Extra successful calls beyond one per event.
    pub duplicated_calls: usize,
    /// Events called more than once: their call positions.
    pub duplicated: BTreeMap<String, Vec<u64>>,
}

/// Checks acknowledged `deliveries` against the handled events, each tenant's list of
/// handled ids and the Confluence calls.
pub fn judge(
    deliveries: &[Delivery],
    handled: &HashMap<String, String>,
    lists: &HashMap<String, Vec<String>>,
    calls: &HashMap<String, Vec<u64>>,
) -> Findings {
    let mut findings = Findings {
        handled: handled.len(),
        ..Findings::default()
    };
    let mut sequence_of: HashMap<&str, u64> = HashMap::new();
    for delivery in deliveries {
        if let Some(id) = &delivery.event_id {
            findings.acknowledged += 1;
            sequence_of.insert(id, delivery.sequence);
            if !handled.contains_key(id) {
                findings.lost.push(id.clone());
            }
        }
    }
    // Exactly once: every handled event is in its tenant's list once, and the lists hold
    // nothing else.
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (tenant, ids) in lists {
        for id in ids {
            *seen.entry(id).or_default() += 1;
            if handled.get(id).is_none_or(|owner| owner != tenant) {
                findings.effect_errors.push(format!(
                    "{id} in the list of {tenant} but not handled for it"
                ));
            }
        }
    }
    for id in handled.keys() {
        match seen.get(id.as_str()) {
            Some(1) => {}
            Some(n) => findings
                .effect_errors
                .push(format!("{id} applied {n} times")),
            None => findings.effect_errors.push(format!("{id} never applied")),
        }
    }
    // Order: a tenant's acknowledged events were handled in the order they were sent.
    for (tenant, ids) in lists {
        let sequences: Vec<u64> = ids
            .iter()
            .filter_map(|id| sequence_of.get(id.as_str()).copied())
            .collect();
        if sequences.windows(2).any(|w| w[0] >= w[1]) {
            findings
                .order_errors
                .push(format!("{tenant}: {sequences:?}"));
        }
    }
    for id in handled.keys() {
        match calls.get(id) {
            None => findings.uncalled.push(id.clone()),
            Some(positions) if positions.len() > 1 => {
                findings.duplicated_calls += positions.len() - 1;
                findings.duplicated.insert(id.clone(), positions.clone());
            }
            Some(_) => {}
        }
    }
    findings
}
