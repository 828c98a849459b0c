//! A request as a test means to send it, odd headers and bodies included.

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use serde_json::Value;

#[derive(Clone, Debug)]
pub struct Raw {
    pub method: reqwest::Method,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Raw {
    /// A JSON POST of `body` to `target` (path and query).
    pub fn post(target: &str, body: &Value) -> Raw {
        Raw::post_bytes(target, body.to_string().into_bytes())
    }

    /// A POST of `body` as it is, declared JSON.
    pub fn post_bytes(target: &str, body: Vec<u8>) -> Raw {
        Raw {
            method: reqwest::Method::POST,
            target: target.to_string(),
            headers: vec![(CONTENT_TYPE.to_string(), "application/json".to_string())],
            body,
        }
    }

    pub fn get(target: &str) -> Raw {
        Raw {
            method: reqwest::Method::GET,
            target: target.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// `Authorization: JWT <token>`.
    pub fn token(self, token: &str) -> Raw {
        self.header(AUTHORIZATION.as_str(), &format!("JWT {token}"))
    }

    /// Sets header `name`, replacing any of that name.
    pub fn header(mut self, name: &str, value: &str) -> Raw {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn without_header(mut self, name: &str) -> Raw {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self
    }
}
