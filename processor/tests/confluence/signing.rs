//! Requests signed as the app pass Confluence's checks, awkward queries and `/wiki` included.

use serde_json::{Value, json};
use tributary_processor::confluence::{ApiRequest, NewPage, PageUpdate};

use crate::Harness;
use tributary_devkit::confluence::{Caller, Scripted};

#[tokio::test]
async fn a_get_and_a_post_with_awkward_queries_pass_the_simulators_checks() {
    let harness = Harness::start(&[]).await;

    let echo: Value = harness
        .client
        .json(
            ApiRequest::get("/rest/api/content/search")
                .query("limit", "25")
                .query("cql", "type = page AND title ~ \"café, crème\"")
                .query("label", "ünï")
                .query("expand", "body.storage,version")
                .query("label", "a b"),
        )
        .await
        .expect("signed GET accepted");
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["path"], "/wiki/rest/api/content/search");

    let echo: Value = harness
        .client
        .post_json(
            "/api/v2/pages",
            &[
                ("tag", "x,y"),
                ("root-level", "true"),
                ("tag", "z z"),
                ("embedded", ""),
            ],
            &json!({ "title": "Grüße" }),
        )
        .await
        .expect("signed POST accepted");
    assert_eq!(echo["body"]["title"], "Grüße");

    harness.assert_all_verified();
    let received = harness.confluence.calls();
    assert_eq!(received.len(), 2);
    assert!(received.iter().all(|r| r.caller == Caller::App));
    assert_eq!(
        received[0].canonical,
        "GET&/rest/api/content/search&cql=type%20%3D%20page%20AND%20title%20~%20%22caf%C3%A9%2C%20cr%C3%A8me%22\
         &expand=body.storage%2Cversion&label=a%20b,%C3%BCn%C3%AF&limit=25"
    );
    assert_eq!(
        received[1].canonical,
        "POST&/api/v2/pages&embedded=&root-level=true&tag=x%2Cy,z%20z"
    );
    assert!(received[1].target.starts_with("/wiki/api/v2/pages?"));
}

#[tokio::test]
async fn typed_helpers_send_the_expected_calls() {
    let harness = Harness::start(&[]).await;
    let client = &harness.client;
    let page = json!({
        "id": "42", "status": "current", "title": "Plan", "spaceId": "7", "parentId": "1",
        "version": { "number": 1 }, "body": { "storage": { "representation": "storage", "value": "<p>v1</p>" } },
        "_links": { "webui": "/spaces/DEV/pages/42" }
    });

    harness.confluence.enqueue(Scripted::json(
        200,
        json!({ "id": "7", "key": "DEV", "name": "Development" }),
    ));
    harness.confluence.enqueue(Scripted::json(
        200,
        json!({
            "id": "42", "type": "page", "status": "current", "title": "Plan",
            "space": { "id": 7, "key": "DEV" }, "ancestors": [{ "id": "1" }],
            "version": { "number": 1 },
            "body": { "storage": { "representation": "storage", "value": "<p>v1</p>" } },
            "_links": { "webui": "/spaces/DEV/pages/42" }
        }),
    ));
    let created = client
        .create_page(&NewPage {
            space_id: "7".into(),
            title: "Plan".into(),
            parent_id: Some("1".into()),
            storage_body: "<p>v1</p>".into(),
        })
        .await
        .expect("page created");
    assert_eq!(created.id, "42");
    assert_eq!(created.version.as_ref().map(|v| v.number), Some(1));
    assert_eq!(
        (created.space_id.as_deref(), created.parent_id.as_deref()),
        (Some("7"), Some("1")),
        "the v1 answer in the v2 shape"
    );
    assert!(
        created.other.contains_key("_links"),
        "unknown fields are kept"
    );

    harness
        .confluence
        .enqueue(Scripted::json(200, page.clone()));
    let fetched = client.get_page("42").await.expect("page read");
    assert_eq!(
        fetched.body.and_then(|b| b.storage).map(|s| s.value),
        Some("<p>v1</p>".to_string())
    );

    harness
        .confluence
        .enqueue(Scripted::json(200, page.clone()));
    client
        .update_page(
            "42",
            &PageUpdate {
                title: "Plan".into(),
                storage_body: "<p>v2</p>".into(),
                version: 2,
                version_message: Some("by a handler".into()),
            },
        )
        .await
        .expect("page updated");

    harness.confluence.enqueue(Scripted::json(
        200,
        json!({ "id": "77", "type": "comment", "status": "current" }),
    ));
    let comment = client
        .add_comment("42", "<p>Looks good</p>")
        .await
        .expect("comment added");
    assert_eq!(comment.id, "77");

    harness
        .confluence
        .enqueue(Scripted::json(200, json!({ "results": [], "size": 1 })));
    client
        .add_label("42", "needs-review")
        .await
        .expect("label added");

    harness.confluence.enqueue(Scripted::json(
        200,
        json!({ "id": "5", "type": "page", "title": "Plan" }),
    ));
    let content = client
        .get_content("42", &["version", "space"])
        .await
        .expect("content read");
    assert_eq!(content.content_type, "page");

    let property = json!({ "id": "9", "key": "tributary.state", "value": { "seen": 1 }, "version": { "number": 1 } });
    harness
        .confluence
        .enqueue(Scripted::json(404, json!({ "message": "not found" })));
    harness
        .confluence
        .enqueue(Scripted::json(200, property.clone()));
    let created = client
        .set_content_property("42", "tributary.state", &json!({ "seen": 1 }))
        .await
        .expect("property created");
    assert_eq!(created.version.map(|v| v.number), Some(1));

    harness
        .confluence
        .enqueue(Scripted::json(200, property.clone()));
    harness
        .confluence
        .enqueue(Scripted::json(200, property.clone()));
    client
        .set_content_property("42", "tributary.state", &json!({ "seen": 2 }))
        .await
        .expect("property updated");

    harness
        .confluence
        .enqueue(Scripted::json(404, json!({ "message": "not found" })));
    assert_eq!(
        client
            .get_content_property("42", "absent")
            .await
            .expect("404 is no property"),
        None
    );

    harness.assert_all_verified();
    let calls: Vec<(String, String)> = harness
        .confluence
        .calls()
        .iter()
        .map(|r| (r.method.clone(), r.target.clone()))
        .collect();
    let expected = [
        ("GET", "/wiki/api/v2/spaces/7"),
        (
            "POST",
            "/wiki/rest/api/content?expand=space%2Cversion%2Cancestors%2Cbody.storage",
        ),
        ("GET", "/wiki/api/v2/pages/42?body-format=storage"),
        ("PUT", "/wiki/api/v2/pages/42"),
        ("POST", "/wiki/rest/api/content"),
        ("POST", "/wiki/rest/api/content/42/label"),
        ("GET", "/wiki/rest/api/content/42?expand=version%2Cspace"),
        ("GET", "/wiki/rest/api/content/42/property/tributary.state"),
        ("POST", "/wiki/rest/api/content/42/property"),
        ("GET", "/wiki/rest/api/content/42/property/tributary.state"),
        ("PUT", "/wiki/rest/api/content/42/property/tributary.state"),
        ("GET", "/wiki/rest/api/content/42/property/absent"),
    ];
    assert_eq!(
        calls,
        expected
            .iter()
            .map(|(m, t)| (m.to_string(), t.to_string()))
            .collect::<Vec<_>>()
    );

    let bodies: Vec<Value> = harness
        .confluence
        .calls()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap_or(Value::Null))
        .collect();
    let marker = |body: &Value| body["metadata"]["properties"]["tributary-write"]["value"].clone();
    assert_eq!(bodies[1]["space"], json!({ "key": "DEV" }));
    assert_eq!(bodies[1]["ancestors"], json!([{ "id": "1" }]));
    assert_eq!(
        (&bodies[1]["type"], &bodies[1]["title"], &bodies[1]["body"]),
        (
            &json!("page"),
            &json!("Plan"),
            &json!({ "storage": { "representation": "storage", "value": "<p>v1</p>" } })
        )
    );
    assert!(marker(&bodies[1]).is_object(), "{}", bodies[1]);
    assert_eq!(
        bodies[3]["version"],
        json!({ "number": 2, "message": "by a handler" })
    );
    assert_eq!(bodies[4]["type"], "comment");
    assert_eq!(bodies[4]["container"]["id"], "42");
    assert_ne!(
        marker(&bodies[4]),
        marker(&bodies[1]),
        "each create its own"
    );
    assert_eq!(
        bodies[5],
        json!([{ "prefix": "global", "name": "needs-review" }])
    );
    assert_eq!(
        bodies[8],
        json!({ "key": "tributary.state", "value": { "seen": 1 } })
    );
    assert_eq!(bodies[10]["version"]["number"], 2);
    assert_eq!(bodies[10]["value"], json!({ "seen": 2 }));
}

#[tokio::test]
async fn requests_and_their_durations_are_counted() {
    let handle = tributary_common::telemetry::metrics_handle();
    let harness = Harness::start(&[]).await;
    harness
        .client
        .get_json::<Value>("/rest/api/space", &[])
        .await
        .expect("GET accepted");
    harness.confluence.enqueue(Scripted::status(404));
    let missing = harness
        .client
        .get_json::<Value>("/rest/api/space/NOPE", &[])
        .await;
    assert_eq!(missing.expect_err("404 is an error").status(), Some(404));

    let rendered = handle.render();
    for line in [
        "tributary_confluence_requests_total{method=\"GET\",status_class=\"2xx\"}",
        "tributary_confluence_requests_total{method=\"GET\",status_class=\"4xx\"}",
        "tributary_confluence_request_duration_seconds_bucket{method=\"GET\"",
    ] {
        assert!(rendered.contains(line), "metrics lack {line}:\n{rendered}");
    }
}

#[tokio::test]
async fn the_simulator_refuses_a_token_signed_with_another_secret() {
    let harness = Harness::start(&[]).await;
    let clients = tributary_processor::confluence::ConfluenceClients::from_config(&crate::config(
        &harness.auth.url(),
        &[],
    ))
    .expect("clients");
    let impostor = clients
        .for_tenant(
            &crate::tenant(&harness.confluence.base_url()),
            tributary_common::connect::SharedSecret::new("some-other-secret"),
        )
        .expect("client");
    let error = impostor
        .get_json::<Value>("/rest/api/space", &[("q", "x y")])
        .await
        .expect_err("bad signature");
    assert_eq!(error.status(), Some(401));
    assert!(!error.is_transient());
    let received = harness.confluence.calls();
    assert_eq!(received.len(), 1, "401 is not retried");
    assert!(!received[0].verdict.is_accepted());
}
