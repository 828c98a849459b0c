//! What makes a built-in write happen once: the key of the handler run it belongs to, and
//! the marker a created comment or page carries so that a later attempt can find it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::{Value, json};

/// The content property a created comment or page carries its [`WriteMarker`] in.
pub(crate) const MARKER_PROPERTY: &str = "tributary-write";
/// The v1 `expand` that brings a content's marker along.
pub(crate) const MARKER_EXPAND: &str = "metadata.properties.tributary-write";

/// The writes of one handler on one event. Clones share the sequence, so the n-th create a
/// run makes gets the same marker on every attempt, however many clients the run makes,
/// as long as the handler makes its writes in the same order each time.
#[derive(Debug, Clone)]
pub struct WriteKey {
    handler: Arc<str>,
    event_id: Arc<str>,
    attempt: u32,
    /// An earlier run may have written: a retry, or an event replayed from the dead-letter
    /// topic.
    earlier_run: bool,
    made: Arc<AtomicU32>,
}

impl WriteKey {
    /// `attempt` counts from 1; from the second on, each create first looks for what an
    /// earlier attempt may have made.
    pub fn new(
        handler: impl Into<Arc<str>>,
        event_id: impl Into<Arc<str>>,
        attempt: u32,
    ) -> WriteKey {
        WriteKey {
            handler: handler.into(),
            event_id: event_id.into(),
            attempt,
            earlier_run: attempt > 1,
            made: Arc::new(AtomicU32::new(0)),
        }
    }

    /// The same key for an event replayed from the dead-letter topic: even its first
    /// attempt looks for what the runs before the dead-lettering made.
    pub fn replayed(mut self, replayed: bool) -> WriteKey {
        self.earlier_run |= replayed;
        self
    }

    pub fn handler(&self) -> &str {
        &self.handler
    }

    pub fn event_id(&self) -> &str {
        &self.event_id
    }

    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    pub(crate) fn is_retry(&self) -> bool {
        self.earlier_run
    }

    /// The marker of this run's next create.
    pub(crate) fn next_marker(&self) -> WriteMarker {
        let sequence = self.made.fetch_add(1, Ordering::Relaxed) + 1;
        WriteMarker(json!({
            "handler": &*self.handler,
            "event": &*self.event_id,
            "sequence": sequence,
        }))
    }
}

/// Identifies one create: its handler, event and place in the run, or for a client made
/// outside a handler, a random id that only the call making it knows.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WriteMarker(Value);

impl WriteMarker {
    pub(crate) fn for_call() -> WriteMarker {
        WriteMarker(json!({ "call": format!("{:032x}", rand::random::<u128>()) }))
    }

    /// The `metadata` of a v1 create-content body that stores the marker with the content.
    pub(crate) fn metadata(&self) -> Value {
        json!({
            "properties": {
                MARKER_PROPERTY: { "key": MARKER_PROPERTY, "value": &self.0 }
            }
        })
    }

    /// True when `content` (v1, with `metadata.properties.tributary-write` expanded)
    /// carries this marker.
    pub(crate) fn is_on(&self, content: &Value) -> bool {
        content
            .pointer(&format!("/metadata/properties/{MARKER_PROPERTY}/value"))
            .is_some_and(|value| *value == self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_follow_the_run_and_are_found_only_on_their_content() {
        let key = WriteKey::new("comments", "evt-1", 1);
        let first = key.next_marker();
        let second = key.clone().next_marker();
        assert_ne!(first, second, "clones share one sequence");
        let retry = WriteKey::new("comments", "evt-1", 2);
        assert!(retry.is_retry() && !key.is_retry());
        assert_eq!(
            retry.next_marker(),
            first,
            "a retry's first create is the same"
        );

        let content = json!({ "id": "1", "metadata": first.metadata() });
        assert!(first.is_on(&content));
        assert!(!second.is_on(&content));
        assert!(!first.is_on(&json!({ "id": "2" })));
        assert!(!WriteMarker::for_call().is_on(&content));
        assert_ne!(WriteMarker::for_call(), WriteMarker::for_call());
        assert_eq!(
            MARKER_EXPAND,
            format!("metadata.properties.{MARKER_PROPERTY}")
        );
    }
}
