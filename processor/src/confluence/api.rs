//! Typed helpers for the calls handlers make most. Each type keeps the fields handlers
//! usually need and every other field of the answer in `other`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::ConfluenceClient;
use super::error::ConfluenceError;
use super::once::{MARKER_EXPAND, WriteKey, WriteMarker};
use super::request::{ApiRequest, segment};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Version {
    pub number: u64,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// Content as the v1 API answers it (`/rest/api/content/{id}`): a page, blog post, comment...
/// Not the shape webhooks carry, which is [`crate::payload::Content`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentV1 {
    pub id: String,
    #[serde(rename = "type")]
    pub content_type: String,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub version: Option<Version>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BodyValue {
    pub representation: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PageBody {
    #[serde(default)]
    pub storage: Option<BodyValue>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// A page from the v2 API (`/api/v2/pages/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Page {
    pub id: String,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub space_id: Option<String>,
    #[serde(default)]
    pub parent_id: Option<String>,
    #[serde(default)]
    pub version: Option<Version>,
    #[serde(default)]
    pub body: Option<PageBody>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// A new page; the body is Confluence storage format (XHTML).
#[derive(Debug, Clone, PartialEq)]
pub struct NewPage {
    pub space_id: String,
    pub title: String,
    pub parent_id: Option<String>,
    pub storage_body: String,
}

/// A page's next version. `version` must be one more than the current version number.
#[derive(Debug, Clone, PartialEq)]
pub struct PageUpdate {
    pub title: String,
    pub storage_body: String,
    pub version: u64,
    pub version_message: Option<String>,
}

/// A footer comment: its id, and the rest of the v1 content answer
/// (`/rest/api/content`) in `other`. Not the shape webhooks carry, which is
/// [`crate::payload::Comment`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FooterComment {
    pub id: String,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// A content property (v1 API): a JSON value stored under a key on a piece of content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentProperty {
    #[serde(default)]
    pub id: Option<String>,
    pub key: String,
    pub value: Value,
    #[serde(default)]
    pub version: Option<Version>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

fn storage(value: &str) -> Value {
    json!({ "representation": "storage", "value": value })
}

impl ConfluenceClient {
    /// Any content by id (v1), with the given `expand` fields (e.g. `body.storage`, `version`).
    pub async fn get_content(
        &self,
        id: &str,
        expand: &[&str],
    ) -> Result<ContentV1, ConfluenceError> {
        let mut request = ApiRequest::get(format!("/rest/api/content/{}", segment(id)));
        if !expand.is_empty() {
            request = request.query("expand", expand.join(","));
        }
        self.json(request).await
    }

    /// A page by id (v2), with its body in storage format.
    pub async fn get_page(&self, id: &str) -> Result<Page, ConfluenceError> {
        self.json(
            ApiRequest::get(format!("/api/v2/pages/{}", segment(id)))
                .query("body-format", "storage"),
        )
        .await
    }

    /// Creates a page. It is created through the v1 API with its write marker (the
    /// client's [`WriteKey`] and this create's place in the run) as a content property in
    /// the same request, so that after a lost answer, or on a handler's retry, the page is
    /// looked up by space and title and returned if it carries the marker instead of
    /// being created again. The answer is mapped to the v2 shape (`other` holds the rest
    /// of the v1 answer).
    pub async fn create_page(&self, page: &NewPage) -> Result<Page, ConfluenceError> {
        let marker = self.next_marker();
        let space_key = self.space_key(&page.space_id).await?;
        if self.is_retry()
            && let Some(found) = self.find_page(&space_key, &page.title, &marker).await?
        {
            return Ok(found);
        }
        let mut body = json!({
            "type": "page",
            "status": "current",
            "title": page.title,
            "space": { "key": space_key },
            "body": { "storage": storage(&page.storage_body) },
            "metadata": marker.metadata(),
        });
        if let Some(parent) = &page.parent_id {
            body["ancestors"] = json!([{ "id": parent }]);
        }
        let request = ApiRequest::post(CONTENT)
            .query("expand", PAGE_EXPAND)
            .json(&body)?;
        match self.json::<Value>(request).await {
            Ok(created) => page_from_v1(created, "POST", CONTENT),
            Err(error @ ConfluenceError::OutcomeUnknown { .. }) => {
                match self.find_page(&space_key, &page.title, &marker).await {
                    Ok(Some(found)) => Ok(found),
                    Ok(None) | Err(_) => Err(self.unconfirmed(error)),
                }
            }
            Err(error) => Err(error),
        }
    }

    /// Publishes a new version of a page (v2). `update.version` makes it happen once:
    /// Confluence refuses a second update to the same version with 409, and a 409 whose
    /// page already has that version with this title and body is the earlier attempt's
    /// success. On a handler's retry, a page that already reads as asked is returned
    /// without a new version.
    pub async fn update_page(
        &self,
        id: &str,
        update: &PageUpdate,
    ) -> Result<Page, ConfluenceError> {
        if self.is_retry() {
            let current = self.get_page(id).await?;
            if reads_as_asked(&current, update) {
                return Ok(current);
            }
        }
        let mut version = json!({ "number": update.version });
        if let Some(message) = &update.version_message {
            version["message"] = json!(message);
        }
        let body = json!({
            "id": id,
            "status": "current",
            "title": update.title,
            "body": storage(&update.storage_body),
            "version": version,
        });
        match self
            .json(ApiRequest::put(format!("/api/v2/pages/{}", segment(id))).json(&body)?)
            .await
        {
            Err(conflict) if conflict.status() == Some(409) => {
                let current = self.get_page(id).await?;
                let done = current.version.as_ref().map(|v| v.number) == Some(update.version)
                    && reads_as_asked(&current, update);
                if done { Ok(current) } else { Err(conflict) }
            }
            answer => answer,
        }
    }

    /// Adds a footer comment to a page. It is created through the v1 API with its write
    /// marker (see [`ConfluenceClient::create_page`]) in the same request, so that after a lost answer, or on a handler's
    /// retry, the page's comments are searched for the marker and the one found is
    /// returned instead of commenting again. The answer is the v1 comment.
    pub async fn add_comment(
        &self,
        page_id: &str,
        storage_body: &str,
    ) -> Result<FooterComment, ConfluenceError> {
        let marker = self.next_marker();
        if self.is_retry()
            && let Some(found) = self.find_comment(page_id, &marker).await?
        {
            return Ok(found);
        }
        let body = json!({
            "type": "comment",
            "container": { "id": page_id, "type": "page", "status": "current" },
            "body": { "storage": storage(storage_body) },
            "metadata": marker.metadata(),
        });
        match self.json(ApiRequest::post(CONTENT).json(&body)?).await {
            Err(error @ ConfluenceError::OutcomeUnknown { .. }) => {
                match self.find_comment(page_id, &marker).await {
                    Ok(Some(found)) => Ok(found),
                    Ok(None) | Err(_) => Err(self.unconfirmed(error)),
                }
            }
            answer => answer,
        }
    }

    /// Adds a global label to content (v1). Adding a label twice changes nothing, so this
    /// is retried like an idempotent request.
    pub async fn add_label(&self, content_id: &str, label: &str) -> Result<(), ConfluenceError> {
        let body = json!([{ "prefix": "global", "name": label }]);
        self.send(
            ApiRequest::post(format!("/rest/api/content/{}/label", segment(content_id)))
                .json(&body)?
                .idempotent(true),
        )
        .await
        .map(drop)
    }

    /// A content property, or `None` if the content has none under `key` (v1).
    pub async fn get_content_property(
        &self,
        content_id: &str,
        key: &str,
    ) -> Result<Option<ContentProperty>, ConfluenceError> {
        let path = format!(
            "/rest/api/content/{}/property/{}",
            segment(content_id),
            segment(key)
        );
        match self.json(ApiRequest::get(path)).await {
            Ok(property) => Ok(Some(property)),
            Err(error) if error.status() == Some(404) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Creates or replaces a content property (v1): a new property is created, an existing
    /// one gets the next version, one that already holds `value` is left as it is. Both
    /// writes are safe to repeat: a second create of the key and a second update to the
    /// same version are refused (409), and a refusal whose property already holds `value`
    /// (at that version) is the earlier attempt's success. A concurrent writer with
    /// another value makes this fail with 409 or 400.
    pub async fn set_content_property(
        &self,
        content_id: &str,
        key: &str,
        value: &Value,
    ) -> Result<ContentProperty, ConfluenceError> {
        let current = self.get_content_property(content_id, key).await?;
        let collection = format!("/rest/api/content/{}/property", segment(content_id));
        let (request, version) = match current {
            Some(existing) if existing.value == *value => return Ok(existing),
            None => {
                let body = json!({ "key": key, "value": value });
                (
                    ApiRequest::post(collection).json(&body)?.idempotent(true),
                    None,
                )
            }
            Some(existing) => {
                let next = existing.version.map_or(1, |v| v.number + 1);
                let body = json!({
                    "key": key,
                    "value": value,
                    "version": { "number": next, "minorEdit": true },
                });
                let path = format!("{collection}/{}", segment(key));
                (ApiRequest::put(path).json(&body)?, Some(next))
            }
        };
        match self.json(request).await {
            Err(refused) if matches!(refused.status(), Some(400 | 409)) => {
                match self.get_content_property(content_id, key).await? {
                    Some(property)
                        if property.value == *value
                            && version.is_none_or(|next| {
                                property.version.as_ref().map(|v| v.number) == Some(next)
                            }) =>
                    {
                        Ok(property)
                    }
                    _ => Err(refused),
                }
            }
            answer => answer,
        }
    }

    /// The marker of the next create this client makes.
    fn next_marker(&self) -> WriteMarker {
        match &self.writes {
            Some(key) => key.next_marker(),
            None => WriteMarker::for_call(),
        }
    }

    /// True on a handler's second and later attempts, when an earlier one may have written.
    fn is_retry(&self) -> bool {
        self.writes.as_ref().is_some_and(WriteKey::is_retry)
    }

    /// What a create whose outcome is unknown, and whose content was not found, fails
    /// with. In a handler the cause, which is transient: the retry looks for the content
    /// again before writing, so retrying is safe. Outside one the marker dies with this
    /// call, so the outcome stays unknown.
    fn unconfirmed(&self, error: ConfluenceError) -> ConfluenceError {
        match error {
            ConfluenceError::OutcomeUnknown { cause, .. } if self.writes.is_some() => *cause,
            other => other,
        }
    }

    /// The key of a space, which the v1 create needs, from its id.
    async fn space_key(&self, space_id: &str) -> Result<String, ConfluenceError> {
        let path = format!("/api/v2/spaces/{}", segment(space_id));
        let space: Value = self.json(ApiRequest::get(&path)).await?;
        space
            .get("key")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| ConfluenceError::Decode {
                method: "GET".into(),
                path,
                message: "the space has no key".into(),
            })
    }

    /// The page titled `title` in the space, if it carries `marker` (titles are unique in
    /// a space, so there is at most one).
    async fn find_page(
        &self,
        space_key: &str,
        title: &str,
        marker: &WriteMarker,
    ) -> Result<Option<Page>, ConfluenceError> {
        let listing: Value = self
            .json(
                ApiRequest::get(CONTENT)
                    .query("type", "page")
                    .query("spaceKey", space_key)
                    .query("title", title)
                    .query("status", "current")
                    .query("expand", format!("{PAGE_EXPAND},{MARKER_EXPAND}")),
            )
            .await?;
        match results(&listing).iter().find(|page| marker.is_on(page)) {
            Some(page) => page_from_v1(page.clone(), "GET", CONTENT).map(Some),
            None => Ok(None),
        }
    }

    /// The footer comment on the page that carries `marker`, going through every page of
    /// the page's comments.
    async fn find_comment(
        &self,
        page_id: &str,
        marker: &WriteMarker,
    ) -> Result<Option<FooterComment>, ConfluenceError> {
        let path = format!("/rest/api/content/{}/child/comment", segment(page_id));
        let mut start = 0;
        loop {
            let listing: Value = self
                .json(
                    ApiRequest::get(&path)
                        .query("location", "footer")
                        .query("expand", MARKER_EXPAND)
                        .query("start", start.to_string())
                        .query("limit", LISTING_LIMIT.to_string()),
                )
                .await?;
            let comments = results(&listing);
            if let Some(comment) = comments.iter().find(|comment| marker.is_on(comment)) {
                return serde_json::from_value(comment.clone())
                    .map(Some)
                    .map_err(|e| ConfluenceError::Decode {
                        method: "GET".into(),
                        path: path.clone(),
                        message: e.to_string(),
                    });
            }
            if comments.is_empty() || listing.pointer("/_links/next").is_none() {
                return Ok(None);
            }
            start += comments.len();
        }
    }
}

/// The v1 content collection, where content is created with its properties.
const CONTENT: &str = "/rest/api/content";
/// What a v1 page answer needs expanded to fill a [`Page`].
const PAGE_EXPAND: &str = "space,version,ancestors,body.storage";
/// Listing page size (the v1 API's usual maximum for content children).
const LISTING_LIMIT: usize = 100;

fn results(listing: &Value) -> &[Value] {
    listing
        .get("results")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Whether a page already has the title and body an update asks for.
fn reads_as_asked(page: &Page, update: &PageUpdate) -> bool {
    let body = page
        .body
        .as_ref()
        .and_then(|body| body.storage.as_ref())
        .map(|storage| storage.value.trim());
    page.title.as_deref() == Some(update.title.as_str()) && body == Some(update.storage_body.trim())
}

/// A v1 page answer (expanded with [`PAGE_EXPAND`]) in the v2 shape.
fn page_from_v1(mut content: Value, method: &str, path: &str) -> Result<Page, ConfluenceError> {
    let id_text = |id: &Value| match id {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    };
    let space_id = content.pointer("/space/id").and_then(id_text);
    let parent_id = content
        .get("ancestors")
        .and_then(Value::as_array)
        .and_then(|ancestors| ancestors.last())
        .and_then(|parent| parent.get("id"))
        .and_then(id_text);
    let storage = content.pointer("/body/storage").cloned();
    if let Some(object) = content.as_object_mut() {
        object.insert("spaceId".into(), json!(space_id));
        object.insert("parentId".into(), json!(parent_id));
        object.insert("body".into(), json!({ "storage": storage }));
    }
    serde_json::from_value(content).map_err(|e| ConfluenceError::Decode {
        method: method.into(),
        path: path.into(),
        message: e.to_string(),
    })
}
