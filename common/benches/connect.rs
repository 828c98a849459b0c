//! Micro-benchmarks of the per-request work: canonical request and qsh, token verification,
//! envelope encoding. `cargo bench -p tributary-common`.

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use tributary_common::connect::token::{QshPolicy, RequestTarget, UnverifiedToken, now_unix};
use tributary_common::connect::{CanonicalRequest, SharedSecret};
use tributary_common::envelope::{Envelope, EventKind};
use tributary_devkit::Token;

const WEBHOOK: RequestTarget<'static> = RequestTarget {
    method: "POST",
    target: "/webhooks/page_created?user_id=557058%3Aabc&tz=Australia%2FSydney&lic=active&cp=%2Fwiki",
    base_path: "",
};

fn canonical(c: &mut Criterion) {
    c.bench_function("qsh/webhook with query", |b| {
        b.iter(|| CanonicalRequest::new(black_box("POST"), black_box(WEBHOOK.target), ""))
    });
    let long: String = (0..50).map(|i| format!("k{}=v%20{}&", i % 7, i)).collect();
    let target = format!("/rest/api/content/search?{long}");
    c.bench_function("qsh/50 parameters", |b| {
        b.iter(|| CanonicalRequest::new("GET", black_box(&target), "/wiki"))
    });
}

fn verification(c: &mut Criterion) {
    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    let secret = SharedSecret::new(SECRET);
    let token = Token::from_confluence("tenant-a")
        .ttl(3600)
        .for_request(WEBHOOK.method, WEBHOOK.target)
        .hs256(SECRET)
        .expect("signs");
    c.bench_function("hs256/parse and verify a webhook token", |b| {
        b.iter(|| {
            let parsed = UnverifiedToken::parse(black_box(&token)).expect("parses");
            parsed
                .verify_hs256(&secret, WEBHOOK, QshPolicy::RequestOnly, now_unix(), 30)
                .expect("verifies")
        })
    });
}

fn envelope(c: &mut Criterion) {
    let body = Bytes::from(format!(
        "{{\"page\":{{\"id\":123456,\"title\":\"{}\",\"spaceKey\":\"DEV\"}},\"timestamp\":1700000000000}}",
        "x".repeat(400)
    ));
    let envelope = Envelope::new(
        EventKind::Webhook("page_created".into()),
        "tenant-a",
        "https://acme.atlassian.net/wiki",
        body.clone(),
    );
    c.bench_function("envelope/encode headers", |b| {
        b.iter(|| black_box(&envelope).headers())
    });
    let headers = envelope.headers();
    c.bench_function("envelope/decode", |b| {
        b.iter(|| {
            Envelope::decode(
                Some(b"tenant-a"),
                headers.iter().map(|(k, v)| (*k, Some(v.as_bytes()))),
                Some(black_box(&body)),
            )
            .expect("decodes")
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = canonical, verification, envelope
}
criterion_main!(benches);
