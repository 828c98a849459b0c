//! Event-name patterns with `*` wildcards, the topic router built on them, and the names of
//! dead-letter topics.

/// True when `name` matches `pattern`, where `*` stands for any run of characters.
pub fn wildcard_match(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ni));
            pi += 1;
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    #[error("`{0}` is not a valid topic name")]
    DefaultTopic(String),
    #[error("`{0}` is not PATTERN=TOPIC")]
    Syntax(String),
    #[error("`{0}` is not a valid topic name")]
    Topic(String),
}

/// Chooses the topic for an event name: the first matching route, else the default topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicRouter {
    default_topic: String,
    routes: Vec<(String, String)>,
}

/// Kafka's own rule for topic names.
pub fn is_valid_topic(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl TopicRouter {
    pub fn new(default_topic: &str, routes: &[String]) -> Result<Self, RouteError> {
        if !is_valid_topic(default_topic) {
            return Err(RouteError::DefaultTopic(default_topic.to_string()));
        }
        let routes = routes
            .iter()
            .map(|route| {
                let (pattern, topic) = route
                    .split_once('=')
                    .map(|(p, t)| (p.trim(), t.trim()))
                    .filter(|(p, _)| !p.is_empty())
                    .ok_or_else(|| RouteError::Syntax(route.clone()))?;
                if !is_valid_topic(topic) {
                    return Err(RouteError::Topic(topic.to_string()));
                }
                Ok((pattern.to_string(), topic.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TopicRouter {
            default_topic: default_topic.to_string(),
            routes,
        })
    }

    pub fn topic_for(&self, event_name: &str) -> &str {
        self.routes
            .iter()
            .find(|(pattern, _)| wildcard_match(pattern, event_name))
            .map(|(_, topic)| topic.as_str())
            .unwrap_or(&self.default_topic)
    }

    /// Every topic an event can be routed to.
    pub fn topics(&self) -> Vec<&str> {
        let mut topics: Vec<&str> = std::iter::once(self.default_topic.as_str())
            .chain(self.routes.iter().map(|(_, t)| t.as_str()))
            .collect();
        topics.sort_unstable();
        topics.dedup();
        topics
    }
}

/// The dead-letter topic of `topic`: its name followed by `suffix` (`processor_dlq_suffix`).
pub fn dead_letter_topic(topic: &str, suffix: &str) -> String {
    format!("{topic}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard_match("page_*", "page_created"));
        assert!(wildcard_match("*_viewed", "blog_viewed"));
        assert!(wildcard_match("*", "anything"));
        assert!(wildcard_match("a*b*c", "aXXbYYc"));
        assert!(!wildcard_match("page_*", "blog_created"));
        assert!(!wildcard_match("page_created", "page_created_x"));
    }

    #[test]
    fn first_matching_route_wins() {
        let router = TopicRouter::new(
            "tributary.events",
            &[
                "*_viewed=tributary.views".into(),
                "page_*=tributary.pages".into(),
            ],
        )
        .expect("valid");
        assert_eq!(router.topic_for("page_viewed"), "tributary.views");
        assert_eq!(router.topic_for("page_created"), "tributary.pages");
        assert_eq!(router.topic_for("installed"), "tributary.events");
        assert!(TopicRouter::new("ok", &["nope".into()]).is_err());
        assert!(TopicRouter::new("bad topic", &[]).is_err());
    }

    #[test]
    fn dead_letter_topics_carry_the_suffix() {
        assert_eq!(
            dead_letter_topic("tributary.events", ".dlq"),
            "tributary.events.dlq"
        );
    }
}
