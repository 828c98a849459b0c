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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that answers every connection with `head` and then `body_bytes` bytes.
    async fn serve(head: &'static str, body_bytes: usize) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut request = [0u8; 1024];
                    let _ = stream.read(&mut request).await;
                    let _ = stream.write_all(head.as_bytes()).await;
                    let chunk = vec![b'x'; 8192];
                    let mut sent = 0;
                    while sent < body_bytes {
                        let n = chunk.len().min(body_bytes - sent);
                        if stream.write_all(&chunk[..n]).await.is_err() {
                            return;
                        }
                        sent += n;
                    }
                });
            }
        });
        format!("http://{addr}/")
    }

    #[tokio::test]
    async fn answers_over_the_cap_are_refused_declared_or_streamed() {
        let http = reqwest::Client::new();
        let declared = serve(
            "HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\nConnection: close\r\n\r\n",
            0,
        )
        .await;
        let answer = http.get(&declared).send().await.expect("answer");
        assert!(matches!(
            read_capped(answer, 1024).await,
            Err(ReadError::TooLarge(1024))
        ));

        // No length declared: the count is kept while reading.
        let streamed = serve("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", 64 * 1024).await;
        let answer = http.get(&streamed).send().await.expect("answer");
        assert!(matches!(
            read_capped(answer, 16 * 1024).await,
            Err(ReadError::TooLarge(_))
        ));
        let answer = http.get(&streamed).send().await.expect("answer");
        let body = read_capped(answer, 128 * 1024)
            .await
            .expect("within the cap");
        assert_eq!(body.len(), 64 * 1024);
    }
}
