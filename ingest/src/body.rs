//! Reading request bodies within the configured limit, and what the request claims to be.

use std::time::Duration;

use axum::body::Body;
use axum::extract::OriginalUri;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use crate::rejection::Rejection;

/// Refuses a content type that is declared and is not JSON. A missing one is let through:
/// the body is parsed as JSON anyway.
pub fn check_json_content_type(headers: &HeaderMap) -> Result<(), Rejection> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let value = value
        .to_str()
        .map_err(|_| Rejection::UnsupportedContentType)?;
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .as_bytes();
    // Compared without a lowercased copy per request.
    let json_suffix =
        essence.len() >= 5 && essence[essence.len() - 5..].eq_ignore_ascii_case(b"+json");
    if essence.eq_ignore_ascii_case(b"application/json") || json_suffix {
        Ok(())
    } else {
        Err(Rejection::UnsupportedContentType)
    }
}

/// Refuses a body whose declared length is over `max` before a byte of it is read.
pub fn check_declared_length(headers: &HeaderMap, max: usize) -> Result<(), Rejection> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(length) if length > max as u64 => Err(Rejection::BodyTooLarge),
        _ => Ok(()),
    }
}

/// How long a whole body may take to arrive. Confluence sends small bodies at once; a
/// client dribbling its body (slow loris) would otherwise hold a connection and an
/// in-flight slot for as long as it likes.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads the whole body within [`BODY_READ_TIMEOUT`], refusing it as soon as it grows past
/// `max` (chunked bodies have no declared length, so the count is kept while reading).
pub async fn read_limited(body: Body, max: usize) -> Result<Bytes, Rejection> {
    tokio::time::timeout(BODY_READ_TIMEOUT, read_all(body, max))
        .await
        .unwrap_or(Err(Rejection::BodyTimeout))
}

async fn read_all(body: Body, max: usize) -> Result<Bytes, Rejection> {
    let mut stream = body.into_data_stream();
    // A body that arrives in one chunk (the usual webhook) is kept as hyper read it; only a
    // body in several chunks is copied into one buffer.
    let mut first: Option<Bytes> = None;
    let mut buffer = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|_| Rejection::MalformedBody("the body could not be read".into()))?;
        let read = first.as_ref().map_or(0, Bytes::len) + buffer.len();
        if read + chunk.len() > max {
            return Err(Rejection::BodyTooLarge);
        }
        match first.take() {
            None if buffer.is_empty() => first = Some(chunk),
            Some(earlier) => {
                buffer.reserve(earlier.len() + chunk.len());
                buffer.extend_from_slice(&earlier);
                buffer.extend_from_slice(&chunk);
            }
            None => buffer.extend_from_slice(&chunk),
        }
    }
    Ok(first.unwrap_or_else(|| buffer.freeze()))
}

/// The path and query exactly as the client sent them, which the qsh is computed over
/// (a router nested under the base path sees a shortened URI).
pub fn request_target(parts: &Parts) -> &str {
    let uri = parts
        .extensions
        .get::<OriginalUri>()
        .map(|original| &original.0)
        .unwrap_or(&parts.uri);
    uri.path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or_else(|| uri.path())
}

/// The query of the original request, where a `jwt` parameter may carry the token.
pub fn request_query(parts: &Parts) -> Option<&str> {
    parts
        .extensions
        .get::<OriginalUri>()
        .map(|original| &original.0)
        .unwrap_or(&parts.uri)
        .query()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(name.clone(), HeaderValue::from_str(value).expect("header"));
        }
        map
    }

    #[test]
    fn json_content_types() {
        assert!(check_json_content_type(&headers(&[])).is_ok());
        assert!(
            check_json_content_type(&headers(&[(
                header::CONTENT_TYPE,
                "application/json; charset=utf-8"
            )]))
            .is_ok()
        );
        assert!(
            check_json_content_type(&headers(&[(header::CONTENT_TYPE, "text/plain")])).is_err()
        );
        for accepted in [
            "Application/JSON",
            " application/vnd.api+JSON ; x=y",
            "+json",
        ] {
            assert!(
                check_json_content_type(&headers(&[(header::CONTENT_TYPE, accepted)])).is_ok(),
                "{accepted}"
            );
        }
        for refused in ["json", "application/jsonx", "application/json-patch", ""] {
            assert!(
                check_json_content_type(&headers(&[(header::CONTENT_TYPE, refused)])).is_err(),
                "{refused}"
            );
        }
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_refused() {
        assert!(check_declared_length(&headers(&[(header::CONTENT_LENGTH, "11")]), 10).is_err());
        assert!(check_declared_length(&headers(&[(header::CONTENT_LENGTH, "10")]), 10).is_ok());
        let read = read_limited(Body::from(vec![b'x'; 11]), 10).await;
        assert!(matches!(read, Err(Rejection::BodyTooLarge)));
        let read = read_limited(Body::from(vec![b'x'; 10]), 10).await;
        assert_eq!(read.expect("fits").len(), 10);
    }

    #[tokio::test]
    async fn bodies_in_pieces_are_joined_and_limited() {
        let pieces = || {
            let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
                Ok(Bytes::from_static(b"{\"a\":")),
                Ok(Bytes::new()),
                Ok(Bytes::from_static(b" 1")),
                Ok(Bytes::from_static(b"}")),
            ];
            Body::from_stream(futures::stream::iter(chunks))
        };
        let read = read_limited(pieces(), 64).await.expect("fits");
        assert_eq!(&read[..], b"{\"a\": 1}");
        assert!(matches!(
            read_limited(pieces(), 7).await,
            Err(Rejection::BodyTooLarge)
        ));
    }
}
