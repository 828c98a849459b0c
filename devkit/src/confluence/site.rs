//! Tenants' content and the REST calls on it: pages (v1 content and v2 pages), footer
//! comments, labels and content properties, answered in Confluence's JSON shapes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use axum::http::StatusCode;
use axum::response::Response;
use percent_encoding::percent_decode_str;
use serde_json::{Value, json};

use super::{BASE_PATH, error, lock, ok_json};

/// Ids Confluence hands out are large numbers; new content here starts at this one.
const FIRST_ID: u64 = 10_000_000;

#[derive(Default)]
pub(super) struct Sites {
    tenants: Mutex<HashMap<String, Site>>,
}

#[derive(Default)]
struct Site {
    pages: BTreeMap<String, Page>,
    issued: u64,
}

impl Site {
    fn next_id(&mut self) -> String {
        self.issued += 1;
        (FIRST_ID + self.issued).to_string()
    }
}

struct Page {
    id: String,
    space_id: String,
    parent_id: Option<String>,
    title: String,
    body: String,
    version: u64,
    labels: Vec<String>,
    properties: BTreeMap<String, Property>,
    comments: Vec<Comment>,
}

struct Property {
    id: String,
    value: Value,
    version: u64,
}

struct Comment {
    body: String,
}

impl Sites {
    pub fn add_page(&self, client_key: &str, id: &str, space_id: &str, title: &str) {
        let mut tenants = lock(&self.tenants);
        let site = tenants.entry(client_key.to_string()).or_default();
        site.pages.insert(
            id.to_string(),
            Page::new(id.to_string(), space_id.to_string(), title.to_string()),
        );
    }

    pub fn comments(&self, client_key: &str, page_id: &str) -> Vec<String> {
        lock(&self.tenants)
            .get(client_key)
            .and_then(|site| site.pages.get(page_id))
            .map(|page| page.comments.iter().map(|c| c.body.clone()).collect())
            .unwrap_or_default()
    }

    pub fn labels(&self, client_key: &str, content_id: &str) -> Vec<String> {
        lock(&self.tenants)
            .get(client_key)
            .and_then(|site| site.pages.get(content_id))
            .map(|page| page.labels.clone())
            .unwrap_or_default()
    }

    /// The answer to an authenticated request of `client_key`.
    pub fn answer(&self, client_key: &str, method: &str, target: &str, body: &[u8]) -> Response {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let relative = path.strip_prefix(BASE_PATH).unwrap_or(path);
        let segments: Vec<String> = relative
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
            .collect();
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        let query: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let param = |name: &str| {
            query
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
                .join(",")
        };
        let json_body = serde_json::from_slice::<Value>(body).ok();
        let mut tenants = lock(&self.tenants);
        let site = tenants.entry(client_key.to_string()).or_default();
        match (method, segments.as_slice()) {
            ("GET", ["rest", "api", "content", id]) => match site.pages.get(*id) {
                Some(page) => ok_json(StatusCode::OK, page.v1(&param("expand"))),
                None => not_found("content"),
            },
            ("GET", ["api", "v2", "pages", id]) => match site.pages.get(*id) {
                Some(page) => ok_json(
                    StatusCode::OK,
                    page.v2(param("body-format").split(',').any(|f| f == "storage")),
                ),
                None => not_found("page"),
            },
            ("POST", ["api", "v2", "pages"]) => create_page(site, json_body),
            ("PUT", ["api", "v2", "pages", id]) => update_page(site, id, json_body),
            ("POST", ["api", "v2", "footer-comments"]) => add_comment(site, json_body),
            ("POST", ["rest", "api", "content", id, "label"]) => add_labels(site, id, json_body),
            ("GET", ["rest", "api", "content", id, "property", key]) => match site.pages.get(*id) {
                None => not_found("content"),
                Some(page) => match page.properties.get(*key) {
                    Some(property) => ok_json(StatusCode::OK, property.json(key)),
                    None => not_found("property"),
                },
            },
            ("POST", ["rest", "api", "content", id, "property"]) => {
                create_property(site, id, json_body)
            }
            ("PUT", ["rest", "api", "content", id, "property", key]) => {
                update_property(site, id, key, json_body)
            }
            _ => error(StatusCode::NOT_FOUND, "no such resource"),
        }
    }
}

impl Page {
    fn new(id: String, space_id: String, title: String) -> Page {
        Page {
            id,
            space_id,
            parent_id: None,
            title,
            body: String::new(),
            version: 1,
            labels: Vec::new(),
            properties: BTreeMap::new(),
            comments: Vec::new(),
        }
    }

    fn v1(&self, expand: &str) -> Value {
        let mut content = json!({
            "id": self.id,
            "type": "page",
            "status": "current",
            "title": self.title,
            "space": { "id": self.space_id },
            "version": { "number": self.version, "minorEdit": false },
            "_links": { "webui": format!("/spaces/{}/pages/{}", self.space_id, self.id) },
        });
        if expand.split(',').any(|e| e == "body.storage") {
            content["body"] = json!({
                "storage": { "value": self.body, "representation": "storage" }
            });
        }
        content
    }

    fn v2(&self, with_body: bool) -> Value {
        let mut page = json!({
            "id": self.id,
            "status": "current",
            "title": self.title,
            "spaceId": self.space_id,
            "parentId": self.parent_id,
            "version": { "number": self.version, "message": "", "minorEdit": false },
            "_links": { "webui": format!("/spaces/{}/pages/{}", self.space_id, self.id) },
        });
        if with_body {
            page["body"] = json!({
                "storage": { "representation": "storage", "value": self.body }
            });
        }
        page
    }
}

impl Property {
    fn json(&self, key: &str) -> Value {
        json!({
            "id": self.id,
            "key": key,
            "value": self.value,
            "version": { "number": self.version, "minorEdit": true },
        })
    }
}

fn not_found(what: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        &format!("No {what} found with that id"),
    )
}

fn bad_request(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, message)
}

fn text<'a>(body: &'a Value, pointer: &str) -> Option<&'a str> {
    body.pointer(pointer).and_then(Value::as_str)
}

fn create_page(site: &mut Site, body: Option<Value>) -> Response {
    let Some(body) = body else {
        return bad_request("body is not JSON");
    };
    let (Some(space_id), Some(title)) = (text(&body, "/spaceId"), text(&body, "/title")) else {
        return bad_request("spaceId and title are required");
    };
    // Titles are unique within a space.
    if site
        .pages
        .values()
        .any(|p| p.space_id == space_id && p.title == title)
    {
        return bad_request("A page with this title already exists");
    }
    let id = site.next_id();
    let mut page = Page::new(id.clone(), space_id.to_string(), title.to_string());
    page.body = text(&body, "/body/value").unwrap_or_default().to_string();
    page.parent_id = text(&body, "/parentId").map(str::to_string);
    let answer = page.v2(true);
    site.pages.insert(id, page);
    ok_json(StatusCode::OK, answer)
}

fn update_page(site: &mut Site, id: &str, body: Option<Value>) -> Response {
    let Some(body) = body else {
        return bad_request("body is not JSON");
    };
    let Some(page) = site.pages.get_mut(id) else {
        return not_found("page");
    };
    let Some(version) = body.pointer("/version/number").and_then(Value::as_u64) else {
        return bad_request("version.number is required");
    };
    if version != page.version + 1 {
        return error(
            StatusCode::CONFLICT,
            &format!(
                "Version must be incremented on update. Current version is: {}",
                page.version
            ),
        );
    }
    page.version = version;
    if let Some(title) = text(&body, "/title") {
        page.title = title.to_string();
    }
    if let Some(value) = text(&body, "/body/value") {
        page.body = value.to_string();
    }
    ok_json(StatusCode::OK, page.v2(true))
}

fn add_comment(site: &mut Site, body: Option<Value>) -> Response {
    let Some(body) = body else {
        return bad_request("body is not JSON");
    };
    let (Some(page_id), Some(value)) = (text(&body, "/pageId"), text(&body, "/body/value")) else {
        return bad_request("pageId and body are required");
    };
    let id = site.next_id();
    let Some(page) = site.pages.get_mut(page_id) else {
        return not_found("page");
    };
    page.comments.push(Comment {
        body: value.to_string(),
    });
    ok_json(
        StatusCode::OK,
        json!({
            "id": id,
            "status": "current",
            "title": format!("Re: {}", page.title),
            "pageId": page_id,
            "version": { "number": 1 },
            "body": { "storage": { "representation": "storage", "value": value } },
        }),
    )
}

fn add_labels(site: &mut Site, id: &str, body: Option<Value>) -> Response {
    let Some(Value::Array(labels)) = body else {
        return bad_request("a list of labels is required");
    };
    let Some(page) = site.pages.get_mut(id) else {
        return not_found("content");
    };
    for label in &labels {
        let Some(name) = label.get("name").and_then(Value::as_str) else {
            return bad_request("a label needs a name");
        };
        if !page.labels.iter().any(|l| l == name) {
            page.labels.push(name.to_string());
        }
    }
    let results: Vec<Value> = page
        .labels
        .iter()
        .enumerate()
        .map(|(i, name)| json!({ "prefix": "global", "name": name, "id": (i + 1).to_string(), "label": name }))
        .collect();
    ok_json(
        StatusCode::OK,
        json!({ "results": results, "start": 0, "limit": 200, "size": page.labels.len() }),
    )
}

fn create_property(site: &mut Site, id: &str, body: Option<Value>) -> Response {
    let Some(body) = body else {
        return bad_request("body is not JSON");
    };
    let (Some(key), Some(value)) = (text(&body, "/key"), body.get("value")) else {
        return bad_request("key and value are required");
    };
    let property_id = site.next_id();
    let Some(page) = site.pages.get_mut(id) else {
        return not_found("content");
    };
    if page.properties.contains_key(key) {
        return error(
            StatusCode::CONFLICT,
            &format!("A property with key '{key}' already exists"),
        );
    }
    let property = Property {
        id: property_id,
        value: value.clone(),
        version: 1,
    };
    let answer = property.json(key);
    page.properties.insert(key.to_string(), property);
    ok_json(StatusCode::OK, answer)
}

fn update_property(site: &mut Site, id: &str, key: &str, body: Option<Value>) -> Response {
    let Some(body) = body else {
        return bad_request("body is not JSON");
    };
    let (Some(value), Some(version)) = (
        body.get("value"),
        body.pointer("/version/number").and_then(Value::as_u64),
    ) else {
        return bad_request("value and version.number are required");
    };
    let property_id = site.next_id();
    let Some(page) = site.pages.get_mut(id) else {
        return not_found("content");
    };
    let current = page.properties.get(key).map_or(0, |p| p.version);
    if version != current + 1 {
        return error(
            StatusCode::CONFLICT,
            &format!("Version must be incremented on update. Current version is: {current}"),
        );
    }
    let property = page
        .properties
        .entry(key.to_string())
        .or_insert_with(|| Property {
            id: property_id,
            value: Value::Null,
            version: 0,
        });
    property.value = value.clone();
    property.version = version;
    ok_json(StatusCode::OK, property.json(key))
}
