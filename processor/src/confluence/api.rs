//! Typed helpers for the calls handlers make most. Each type keeps the fields handlers
//! usually need and every other field of the answer in `other`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::ConfluenceClient;
use super::error::ConfluenceError;
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

/// A footer comment as the v2 API answers it (`/api/v2/footer-comments`). Not the shape
/// webhooks carry, which is [`crate::payload::Comment`].
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

    /// Creates a page (v2). Not retried on server errors: a retry could create it twice.
    pub async fn create_page(&self, page: &NewPage) -> Result<Page, ConfluenceError> {
        let mut body = json!({
            "spaceId": page.space_id,
            "status": "current",
            "title": page.title,
            "body": storage(&page.storage_body),
        });
        if let Some(parent) = &page.parent_id {
            body["parentId"] = json!(parent);
        }
        self.json(ApiRequest::post("/api/v2/pages").json(&body)?)
            .await
    }

    /// Publishes a new version of a page (v2). A version conflict answers 409.
    pub async fn update_page(
        &self,
        id: &str,
        update: &PageUpdate,
    ) -> Result<Page, ConfluenceError> {
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
        self.json(ApiRequest::put(format!("/api/v2/pages/{}", segment(id))).json(&body)?)
            .await
    }

    /// Adds a footer comment to a page (v2).
    pub async fn add_comment(
        &self,
        page_id: &str,
        storage_body: &str,
    ) -> Result<FooterComment, ConfluenceError> {
        let body = json!({ "pageId": page_id, "body": storage(storage_body) });
        self.json(ApiRequest::post("/api/v2/footer-comments").json(&body)?)
            .await
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
    /// one gets the next version. A concurrent writer makes this fail with 409 or 400.
    pub async fn set_content_property(
        &self,
        content_id: &str,
        key: &str,
        value: &Value,
    ) -> Result<ContentProperty, ConfluenceError> {
        let current = self.get_content_property(content_id, key).await?;
        let collection = format!("/rest/api/content/{}/property", segment(content_id));
        match current {
            None => {
                let body = json!({ "key": key, "value": value });
                self.json(ApiRequest::post(collection).json(&body)?).await
            }
            Some(existing) => {
                let next = existing.version.map_or(1, |v| v.number + 1);
                let body = json!({
                    "key": key,
                    "value": value,
                    "version": { "number": next, "minorEdit": true },
                });
                self.json(ApiRequest::put(format!("{collection}/{}", segment(key))).json(&body)?)
                    .await
            }
        }
    }
}
