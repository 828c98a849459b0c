//! Forge event names and the Connect webhook each one corresponds to, so that a handler
//! subscribed to `page_created` receives both Connect's `page_created` and Forge's
//! `avi:confluence:created:page`.

/// `(Connect webhook, Forge event)` for every Confluence event both platforms send, as
/// Atlassian's Forge Confluence events reference names them. A Connect name may have several
/// Forge counterparts (content permissions cover pages, blog posts and custom content); each
/// Forge name has at most one Connect name. Connect's `content_*` webhooks are its custom
/// content events, so they pair with Forge's `custom_content` ones.
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
    ("comment_updated", "avi:confluence:updated:comment"),
    ("comment_removed", "avi:confluence:deleted:comment"),
    ("attachment_created", "avi:confluence:created:attachment"),
    ("attachment_updated", "avi:confluence:updated:attachment"),
    ("attachment_viewed", "avi:confluence:viewed:attachment"),
    ("attachment_trashed", "avi:confluence:trashed:attachment"),
    ("attachment_restored", "avi:confluence:restored:attachment"),
    ("attachment_removed", "avi:confluence:deleted:attachment"),
    ("content_created", "avi:confluence:created:custom_content"),
    ("content_updated", "avi:confluence:updated:custom_content"),
    ("content_trashed", "avi:confluence:trashed:custom_content"),
    ("content_restored", "avi:confluence:restored:custom_content"),
    (
        "content_permissions_updated",
        "avi:confluence:permissions_updated:page",
    ),
    (
        "content_permissions_updated",
        "avi:confluence:permissions_updated:blogpost",
    ),
    (
        "content_permissions_updated",
        "avi:confluence:permissions_updated:custom_content",
    ),
    ("label_created", "avi:confluence:created:label"),
    ("label_added", "avi:confluence:added:label"),
    ("label_removed", "avi:confluence:removed:label"),
    ("label_deleted", "avi:confluence:deleted:label"),
    ("space_created", "avi:confluence:created:space:V2"),
    ("space_updated", "avi:confluence:updated:space:V2"),
    (
        "space_permissions_updated",
        "avi:confluence:permissions_updated:space:V2",
    ),
    ("space_removed", "avi:confluence:deleted:space:V2"),
    ("user_created", "avi:confluence:created:user"),
    ("user_removed", "avi:confluence:deleted:user"),
    ("group_created", "avi:confluence:created:group"),
    ("group_removed", "avi:confluence:deleted:group"),
    ("relation_created", "avi:confluence:created:relation"),
    ("relation_deleted", "avi:confluence:deleted:relation"),
    ("search_performed", "avi:confluence:performed:search"),
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

    /// The README's mapping table, as `(Connect, Forge)` pairs: the rows between the
    /// `| Connect webhook | Forge event |` header and the first line that is not a row.
    fn readme_mapping() -> Vec<(String, String)> {
        let readme = include_str!("../../../README.md");
        let mut lines = readme
            .lines()
            .skip_while(|line| !line.starts_with("| Connect webhook | Forge event |"))
            .skip(2);
        let mut pairs = Vec::new();
        for line in lines.by_ref() {
            let Some(row) = line.strip_prefix('|') else {
                break;
            };
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let connect = cells[0].trim_matches('`').to_string();
            for forge in cells[1].split(',') {
                pairs.push((connect.clone(), forge.trim().trim_matches('`').to_string()));
            }
        }
        pairs
    }

    #[test]
    fn the_readme_mapping_table_is_the_code_table() {
        let mut readme = readme_mapping();
        let mut code: Vec<(String, String)> = EVENT_MAPPING
            .iter()
            .map(|(c, f)| (c.to_string(), f.to_string()))
            .collect();
        readme.sort();
        code.sort();
        assert_eq!(readme, code);

        // Every Connect event without a Forge counterpart is named as Connect-only.
        let text = include_str!("../../../README.md");
        let connect_only = text
            .split("Connect-only ones")
            .nth(1)
            .and_then(|rest| rest.split("\n\n").next())
            .expect("the README names the Connect-only events");
        for connect in CONFLUENCE_WEBHOOK_EVENTS {
            if forge_names_of(connect).next().is_none() {
                assert!(
                    connect_only.contains(&format!("`{connect}`")),
                    "{connect} is neither mapped nor Connect-only in the README"
                );
            }
        }
    }

    #[test]
    fn every_mapping_names_a_real_connect_event_and_a_forge_name() {
        for (connect, forge) in EVENT_MAPPING {
            assert!(CONFLUENCE_WEBHOOK_EVENTS.contains(connect), "{connect}");
            assert!(is_forge_event_name(forge), "{forge}");
            assert_eq!(connect_name_of(forge), Some(*connect));
        }
        assert_eq!(forge_names_of("content_permissions_updated").count(), 3);
        let forge_names: std::collections::HashSet<_> =
            EVENT_MAPPING.iter().map(|(_, forge)| *forge).collect();
        assert_eq!(forge_names.len(), EVENT_MAPPING.len(), "a Forge name twice");
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
