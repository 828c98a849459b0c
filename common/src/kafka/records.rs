//! Event envelopes as Kafka records and back (CloudEvents' Kafka binding, binary mode).

use rdkafka::message::{Header, Headers, Message, OwnedHeaders};

use crate::envelope::{Envelope, EnvelopeError};

/// The record headers of an envelope.
pub fn envelope_headers(envelope: &Envelope) -> OwnedHeaders {
    let mut headers = Some(OwnedHeaders::new_with_capacity(8));
    envelope.for_each_header(|key, value| {
        headers = headers.take().map(|h| {
            h.insert(Header {
                key,
                value: Some(value.as_bytes()),
            })
        });
    });
    headers.unwrap_or_default()
}

/// Rebuilds the envelope carried by a consumed record.
pub fn envelope_from_message<M: Message>(message: &M) -> Result<Envelope, EnvelopeError> {
    let headers = message.headers();
    let pairs = headers
        .into_iter()
        .flat_map(|h| h.iter())
        .map(|h| (h.key, h.value));
    Envelope::decode(message.key(), pairs, message.payload())
}
