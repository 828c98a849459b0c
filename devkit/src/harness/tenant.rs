//! A Confluence site with the app installed, and what it sends the ingest: signed installs
//! and uninstalls, HS256-signed `enabled`/`disabled` and webhooks.

use serde_json::{Value, json};

use super::{APP_BASE_URL, APP_KEY, KID, Raw};
use crate::{INSTALL_KEY_1, Token};

#[derive(Clone, Debug)]
pub struct Tenant {
    pub client_key: String,
    pub secret: String,
    pub base_url: String,
    /// The page its webhooks are about (a simulated site knows it once it is added there).
    pub page_id: String,
}

impl Tenant {
    /// A site at `https://<site>.atlassian.net/wiki`.
    pub fn new(site: &str) -> Tenant {
        Tenant::on_site(site, &format!("https://{site}.atlassian.net/wiki"))
    }

    /// A site called `name` living at `base_url` (a simulated Confluence's, say).
    pub fn on_site(name: &str, base_url: &str) -> Tenant {
        Tenant {
            client_key: format!("{name}-{}", uuid::Uuid::new_v4().simple()),
            secret: format!("secret-{}-{}", uuid::Uuid::new_v4(), uuid::Uuid::new_v4()),
            base_url: base_url.to_string(),
            page_id: format!("{}", 100_000 + rand::random::<u32>() % 800_000),
        }
    }

    /// The same site with a rotated shared secret.
    pub fn rotated(&self) -> Tenant {
        Tenant {
            secret: format!("rotated-{}", uuid::Uuid::new_v4()),
            ..self.clone()
        }
    }

    /// An HS256 token from this site for a POST to `target` (path and query), valid for
    /// three minutes.
    pub fn token(&self, target: &str) -> String {
        Token::from_confluence(&self.client_key)
            .for_request("POST", target)
            .hs256(&self.secret)
            .expect("sign")
    }

    /// A lifecycle body of this site; `installed` carries the shared secret.
    pub fn lifecycle_body(&self, event_type: &str) -> Value {
        let mut body = json!({
            "key": APP_KEY,
            "clientKey": self.client_key,
            "baseUrl": self.base_url,
            "displayUrl": self.base_url,
            "productType": "confluence",
            "description": format!("Atlassian Confluence at {}", self.base_url),
            "eventType": event_type,
            "serverVersion": "6452",
            "pluginsVersion": "1001.0.0",
        });
        if event_type == "installed" {
            body["sharedSecret"] = json!(self.secret);
        }
        body
    }

    /// A signed install (RS256 under the world's [`KID`]).
    pub fn install_request(&self) -> Raw {
        self.signed_lifecycle("installed")
    }

    /// A signed uninstall (RS256 under the world's [`KID`]).
    pub fn uninstall_request(&self) -> Raw {
        self.signed_lifecycle("uninstalled")
    }

    fn signed_lifecycle(&self, kind: &str) -> Raw {
        let target = format!("/lifecycle/{kind}");
        let token = install_token(&self.client_key, &target, APP_BASE_URL, KID, INSTALL_KEY_1);
        Raw::post(&target, &self.lifecycle_body(kind)).token(&token)
    }

    /// `enabled` or `disabled`, HS256 with the site's secret.
    pub fn lifecycle_request(&self, kind: &str) -> Raw {
        let target = format!("/lifecycle/{kind}");
        Raw::post(&target, &self.lifecycle_body(kind)).token(&self.token(&target))
    }

    /// A webhook of `event` with `body`, signed for its own path.
    pub fn webhook_request(&self, event: &str, body: &[u8]) -> Raw {
        let target = format!("/webhooks/{event}");
        Raw::post_bytes(&target, body.to_vec()).token(&self.token(&target))
    }

    /// A `page_updated` body about this site's page, carrying `sequence`.
    pub fn page_event(&self, sequence: u64) -> Vec<u8> {
        json!({
            "page": {
                "id": self.page_id.parse::<u64>().unwrap_or_default(),
                "idAsString": self.page_id,
                "spaceKey": "E2E",
                "title": "Pipeline",
                "version": sequence,
            },
            "userAccountId": "557058:e2e",
            "updateTrigger": "edit_page",
            "timestamp": 1_700_000_000_000u64 + sequence,
            "sequence": sequence,
        })
        .to_string()
        .into_bytes()
    }
}

/// An RS256 install token as Atlassian signs them, for a POST to `target` on the app at
/// `audience`, signed with `private_pem` under `kid`.
pub fn install_token(
    client_key: &str,
    target: &str,
    audience: &str,
    kid: &str,
    private_pem: &str,
) -> String {
    Token::signed_install(client_key, audience)
        .for_request("POST", target)
        .rs256(kid, private_pem)
        .expect("sign")
}

/// A webhook body about page 4242 whose title is `marker`, to find the event again.
pub fn page_event(marker: &str) -> Vec<u8> {
    json!({
        "page": { "id": 4242, "idAsString": "4242", "spaceKey": "DEV", "title": marker },
        "userAccountId": "557058:abc",
        "timestamp": 1_700_000_000_000u64,
    })
    .to_string()
    .into_bytes()
}
