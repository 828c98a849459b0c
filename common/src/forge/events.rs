//! Forge event names and the Connect webhook each one corresponds to, so that a handler
//! subscribed to `page_created` receives both Connect's `page_created` and Forge's
//! `avi:confluence:created:page`.

/// `(Connect webhook, Forge event)` for every Confluence event both platforms send. A
/// Connect name may have several Forge counterparts (content permissions cover pages and
/// blog posts); each Forge name has at most one Connect name.
pub const EVENT_MAPPING: &[(&str, &str)] = &[
    ("page_created", "avi:confluence:created:page"),
    ("page_updated", "avi:confluence:updated:page"),
    ("page_viewed", "avi:confluence:viewed:page"),
    ("page_moved", "avi:confluence:moved:page"),
    (
        "page_children_reordered",
        "avi:confluence:children_reordered:page",
    ),
    ("page_trashed", "avi:confluence:trashed:page"),
    ("page_restored", "avi:confluence:restored:page"),
    ("page_removed", "avi:confluence:deleted:page"),
    ("blog_created", "avi:confluence:created:blogpost"),
    ("blog_updated", "avi:confluence:updated:blogpost"),
    ("blog_viewed", "avi:confluence:viewed:blogpost"),
    ("blog_trashed", "avi:confluence:trashed:blogpost"),
    ("blog_restored", "avi:confluence:restored:blogpost"),
    ("blog_removed", "avi:confluence:deleted:blogpost"),
    ("comment_created", "avi:confluence:created:comment"),
    (
        "content_permissions_updated",
        "avi:confluence:permissions_updated:page",
    ),
    (
        "content_permissions_updated",
        "avi:confluence:permissions_updated:blogpost",
    ),
];

/// The Forge lifecycle events of an app installation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForgeEvent {
    Installed,
    Upgraded,
    Uninstalled,
}

impl ForgeEvent {
    pub const INSTALLED: &str = "avi:forge:installed:app";
    pub const UPGRADED: &str = "avi:forge:upgraded:app";
    pub const UNINSTALLED: &str = "avi:forge:uninstalled:app";

    /// The lifecycle event `event_type` names, if it is one.
    pub fn lifecycle(event_type: &str) -> Option<ForgeEvent> {
        match event_type {
            Self::INSTALLED => Some(ForgeEvent::Installed),
            Self::UPGRADED => Some(ForgeEvent::Upgraded),
            Self::UNINSTALLED => Some(ForgeEvent::Uninstalled),
            _ => None,
        }
    }
}

/// The Connect webhook a Forge event corresponds to.
pub fn connect_name_of(forge_name: &str) -> Option<&'static str> {
    EVENT_MAPPING
        .iter()
        .find(|(_, forge)| *forge == forge_name)
        .map(|(connect, _)| *connect)
}

/// The Forge events a Connect webhook corresponds to.
pub fn forge_names_of(connect_name: &str) -> impl Iterator<Item = &'static str> + '_ {
    EVENT_MAPPING
        .iter()
        .filter(move |(connect, _)| *connect == connect_name)
        .map(|(_, forge)| *forge)
}

/// A plausible Forge event name: `avi:` and three or four `:`-separated parts of safe
/// characters. It becomes a metric label and a topic-routing input, so nothing else passes.
pub fn is_forge_event_name(name: &str) -> bool {
    name.len() <= 128
        && name.starts_with("avi:")
        && (4..=5).contains(&name.split(':').count())
        && name.split(':').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connect::events::CONFLUENCE_WEBHOOK_EVENTS;

    #[test]
    fn every_mapping_names_a_real_connect_event_and_a_forge_name() {
        for (connect, forge) in EVENT_MAPPING {
            assert!(CONFLUENCE_WEBHOOK_EVENTS.contains(connect), "{connect}");
            assert!(is_forge_event_name(forge), "{forge}");
            assert_eq!(connect_name_of(forge), Some(*connect));
        }
        assert_eq!(forge_names_of("content_permissions_updated").count(), 2);
        assert_eq!(connect_name_of("avi:confluence:liked:page"), None);
    }

    #[test]
    fn event_names_are_checked() {
        assert!(is_forge_event_name("avi:confluence:created:page"));
        assert!(is_forge_event_name("avi:confluence:created:space:V2"));
        assert!(is_forge_event_name(ForgeEvent::INSTALLED));
        assert!(!is_forge_event_name("page_created"));
        assert!(!is_forge_event_name("avi:confluence::page"));
        assert!(!is_forge_event_name("avi:confluence:created:page\n"));
        assert_eq!(
            ForgeEvent::lifecycle("avi:forge:uninstalled:app"),
            Some(ForgeEvent::Uninstalled)
        );
    }
}
