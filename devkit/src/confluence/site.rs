//! Tenants' content and the REST calls on it: pages (v1 content and v2 pages), footer
//! comments, labels and content properties, answered in Confluence's JSON shapes.
//!
//! Content created through v1 (`POST /rest/api/content`) keeps the properties its
//! `metadata.properties` names, and `expand=metadata.properties.<key>` brings them back,
//! on single content, on content lists and on a page's comments, as Confluence does.

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
    /// Space keys by space id.
    spaces: BTreeMap<String, String>,
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
    id: String,
    body: String,
    properties: BTreeMap<String, Property>,
}

impl Sites {
    pub fn add_page(&self, client_key: &str, id: &str, space_id: &str, title: &str) {
        let mut tenants = lock(&self.tenants);
        let site = tenants.entry(client_key.to_string()).or_default();
        site.spaces
            .entry(space_id.to_string())
            .or_insert_with(|| format!("S{space_id}"));
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

    /// The key of a space a page was added to (`S<id>`).
    pub fn space_key(&self, client_key: &str, space_id: &str) -> Option<String> {
        lock(&self.tenants)
            .get(client_key)
            .and_then(|site| site.spaces.get(space_id).cloned())
    }

    /// A page's version number and title.
    pub fn page_version(&self, client_key: &str, page_id: &str) -> Option<(u64, String)> {
        lock(&self.tenants)
            .get(client_key)
            .and_then(|site| site.pages.get(page_id))
            .map(|page| (page.version, page.title.clone()))
    }

    /// The ids of the pages in a space titled `title` (at most one, titles being unique).
    pub fn pages_titled(&self, client_key: &str, space_id: &str, title: &str) -> Vec<String> {
        lock(&self.tenants)
            .get(client_key)
            .map(|site| {
                site.pages
                    .values()
                    .filter(|p| p.space_id == space_id && p.title == title)
                    .map(|p| p.id.clone())
                    .collect()
            })
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
                Some(page) => ok_json(StatusCode::OK, page.v1(site, &param("expand"))),
                None => not_found("content"),
            },
            ("POST", ["rest", "api", "content"]) => {
                create_content(site, json_body, &param("expand"))
            }
            ("GET", ["rest", "api", "content"]) => list_content(site, &param),
            ("GET", ["rest", "api", "content", id, "child", "comment"]) => {
                child_comments(site, id, &param)
            }
            ("GET", ["api", "v2", "spaces", id]) => match site.spaces.get(*id) {
                Some(key) => ok_json(
                    StatusCode::OK,
                    json!({ "id": id, "key": key, "name": key, "type": "global", "status": "current" }),
                ),
                None => not_found("space"),
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

    fn v1(&self, site: &Site, expand: &str) -> Value {
        let mut content = json!({
            "id": self.id,
            "type": "page",
            "status": "current",
            "title": self.title,
            "space": {
                "id": self.space_id.parse::<u64>().map_or_else(|_| json!(self.space_id), |id| json!(id)),
                "key": site.spaces.get(&self.space_id),
            },
            "version": { "number": self.version, "minorEdit": false },
            "_links": { "webui": format!("/spaces/{}/pages/{}", self.space_id, self.id) },
        });
        if expands(expand, "body.storage") {
            content["body"] = json!({
                "storage": { "value": self.body, "representation": "storage" }
            });
        }
        if expands(expand, "ancestors") {
            content["ancestors"] = match &self.parent_id {
                Some(parent) => json!([{ "id": parent, "type": "page" }]),
                None => json!([]),
            };
        }
        expand_properties(&mut content, &self.properties, expand);
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

impl Comment {
    fn v1(&self, page: &Page, expand: &str) -> Value {
        let mut content = json!({
            "id": self.id,
            "type": "comment",
            "status": "current",
            "title": format!("Re: {}", page.title),
            "container": { "id": page.id, "type": "page" },
            "version": { "number": 1 },
            "extensions": { "location": "footer" },
            "body": { "storage": { "representation": "storage", "value": self.body } },
            "_links": { "webui": format!("/spaces/{}/pages/{}?focusedCommentId={}", page.space_id, page.id, self.id) },
        });
        expand_properties(&mut content, &self.properties, expand);
        content
    }
}

fn expands(expand: &str, what: &str) -> bool {
    expand.split(',').any(|e| e == what)
}

/// Fills `metadata.properties` with the properties `expand` names, one by one
/// (`metadata.properties.<key>`) or all at once (`metadata.properties`).
fn expand_properties(content: &mut Value, properties: &BTreeMap<String, Property>, expand: &str) {
    let all = expands(expand, "metadata.properties");
    let named: Vec<&str> = expand
        .split(',')
        .filter_map(|e| e.strip_prefix("metadata.properties."))
        .collect();
    if !all && named.is_empty() {
        return;
    }
    let expanded: serde_json::Map<String, Value> = properties
        .iter()
        .filter(|(key, _)| all || named.contains(&key.as_str()))
        .map(|(key, property)| (key.clone(), property.json(key)))
        .collect();
    content["metadata"] = json!({ "properties": expanded });
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
        id: id.clone(),
        body: value.to_string(),
        properties: BTreeMap::new(),
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

/// The properties a v1 create body's `metadata.properties` names, each at version 1.
fn created_properties(
    site: &mut Site,
    body: &Value,
) -> Result<BTreeMap<String, Property>, &'static str> {
    let mut properties = BTreeMap::new();
    let Some(named) = body.pointer("/metadata/properties") else {
        return Ok(properties);
    };
    let Some(named) = named.as_object() else {
        return Err("metadata.properties must be an object");
    };
    for (key, property) in named {
        let Some(value) = property.get("value") else {
            return Err("a content property needs a value");
        };
        properties.insert(
            key.clone(),
            Property {
                id: site.next_id(),
                value: value.clone(),
                version: 1,
            },
        );
    }
    Ok(properties)
}

/// `POST /rest/api/content`: a page in a space (by key) or a comment on a page, with its
/// properties stored in the same step.
fn create_content(site: &mut Site, body: Option<Value>, expand: &str) -> Response {
    let Some(body) = body else {
        return bad_request("body is not JSON");
    };
    let storage = text(&body, "/body/storage/value")
        .unwrap_or_default()
        .to_string();
    match text(&body, "/type") {
        Some("page") => {
            let (Some(space_key), Some(title)) = (text(&body, "/space/key"), text(&body, "/title"))
            else {
                return bad_request("space.key and title are required");
            };
            let Some(space_id) = site
                .spaces
                .iter()
                .find(|(_, key)| key.as_str() == space_key)
                .map(|(id, _)| id.clone())
            else {
                return bad_request(&format!("No space with key : {space_key}"));
            };
            if site
                .pages
                .values()
                .any(|p| p.space_id == space_id && p.title == title)
            {
                return bad_request("A page with this title already exists");
            }
            let parent_id = body.pointer("/ancestors/0/id").and_then(|id| {
                id.as_str()
                    .map(str::to_string)
                    .or_else(|| id.as_u64().map(|n| n.to_string()))
            });
            if let Some(parent) = &parent_id
                && !site.pages.contains_key(parent)
            {
                return bad_request("the parent page does not exist");
            }
            let properties = match created_properties(site, &body) {
                Ok(properties) => properties,
                Err(why) => return bad_request(why),
            };
            let id = site.next_id();
            let mut page = Page::new(id.clone(), space_id, title.to_string());
            page.body = storage;
            page.parent_id = parent_id;
            page.properties = properties;
            site.pages.insert(id.clone(), page);
            let Some(page) = site.pages.get(&id) else {
                return error(StatusCode::INTERNAL_SERVER_ERROR, "page vanished");
            };
            ok_json(StatusCode::OK, page.v1(site, expand))
        }
        Some("comment") => {
            let Some(page_id) = text(&body, "/container/id") else {
                return bad_request("container.id is required");
            };
            let page_id = page_id.to_string();
            if !site.pages.contains_key(&page_id) {
                return not_found("content");
            }
            let properties = match created_properties(site, &body) {
                Ok(properties) => properties,
                Err(why) => return bad_request(why),
            };
            let id = site.next_id();
            let Some(page) = site.pages.get_mut(&page_id) else {
                return not_found("content");
            };
            page.comments.push(Comment {
                id,
                body: storage,
                properties,
            });
            let page = &*page;
            match page.comments.last() {
                Some(comment) => ok_json(StatusCode::OK, comment.v1(page, expand)),
                None => error(StatusCode::INTERNAL_SERVER_ERROR, "comment vanished"),
            }
        }
        _ => bad_request("type must be page or comment"),
    }
}

/// `GET /rest/api/content?type=page&spaceKey=&title=`: the pages matching every filter given.
fn list_content(site: &Site, param: &dyn Fn(&str) -> String) -> Response {
    let kind = param("type");
    if !kind.is_empty() && kind != "page" {
        return ok_json(StatusCode::OK, listing(Vec::new(), 0, 25, false));
    }
    let space_key = param("spaceKey");
    let title = param("title");
    let expand = param("expand");
    let matching: Vec<Value> = site
        .pages
        .values()
        .filter(|p| space_key.is_empty() || site.spaces.get(&p.space_id) == Some(&space_key))
        .filter(|p| title.is_empty() || p.title == title)
        .map(|p| p.v1(site, &expand))
        .collect();
    page_of(matching, param)
}

/// `GET /rest/api/content/{id}/child/comment`: the page's footer comments, oldest first.
fn child_comments(site: &Site, id: &str, param: &dyn Fn(&str) -> String) -> Response {
    let Some(page) = site.pages.get(id) else {
        return not_found("content");
    };
    let expand = param("expand");
    let comments = page.comments.iter().map(|c| c.v1(page, &expand)).collect();
    page_of(comments, param)
}

/// One page of `all`, by the `start` and `limit` parameters, in the v1 list shape.
fn page_of(all: Vec<Value>, param: &dyn Fn(&str) -> String) -> Response {
    let start = param("start").parse::<usize>().unwrap_or(0);
    let limit = param("limit").parse::<usize>().unwrap_or(25).clamp(1, 100);
    let more = all.len() > start + limit;
    let results: Vec<Value> = all.into_iter().skip(start).take(limit).collect();
    ok_json(StatusCode::OK, listing(results, start, limit, more))
}

fn listing(results: Vec<Value>, start: usize, limit: usize, more: bool) -> Value {
    let mut links = json!({ "base": "", "context": BASE_PATH });
    if more {
        links["next"] = json!(format!("?start={}&limit={limit}", start + limit));
    }
    let size = results.len();
    json!({
        "results": results,
        "start": start,
        "limit": limit,
        "size": size,
        "_links": links,
    })
}
