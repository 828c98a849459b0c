//! Reading answers within a size cap: a tenant's site or a token server that streams an
//! endless body must not take the processor's memory with it.

use bytes::{Bytes, BytesMut};

/// Largest REST answer read (a page with a large storage body is a few MiB).
pub(crate) const MAX_ANSWER_BYTES: usize = 32 * 1024 * 1024;
/// Largest token-server answer read (an access token is a few KiB).
pub(crate) const MAX_TOKEN_ANSWER_BYTES: usize = 64 * 1024;

#[derive(Debug)]
pub(crate) enum ReadError {
    TooLarge(usize),
    Transport(reqwest::Error),
}

/// The whole body of `answer`, refused as soon as it is known to exceed `max` bytes (from
/// its declared length, or while reading it).
pub(crate) async fn read_capped(
    mut answer: reqwest::Response,
    max: usize,
) -> Result<Bytes, ReadError> {
    if answer
        .content_length()
        .is_some_and(|length| length > max as u64)
    {
        return Err(ReadError::TooLarge(max));
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = answer.chunk().await.map_err(ReadError::Transport)? {
        if body.len() + chunk.len() > max {
            return Err(ReadError::TooLarge(max));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}
