//! The webhook events Confluence Cloud sends to Connect apps.

/// Every Confluence webhook event name, as registered in an app descriptor's
/// `modules.webhooks[].event`. High-volume ones: `*_viewed`, `search_performed`, `login`.
pub const CONFLUENCE_WEBHOOK_EVENTS: &[&str] = &[
    "attachment_created",
    "attachment_removed",
    "attachment_restored",
    "attachment_trashed",
    "attachment_updated",
    "attachment_viewed",
    "blog_created",
    "blog_removed",
    "blog_restored",
    "blog_trashed",
    "blog_updated",
    "blog_viewed",
    "blueprint_page_created",
    "comment_created",
    "comment_removed",
    "comment_updated",
    "connect_addon_disabled",
    "connect_addon_enabled",
    "content_created",
    "content_restored",
    "content_trashed",
    "content_updated",
    "content_permissions_updated",
    "group_created",
    "group_removed",
    "label_added",
    "label_created",
    "label_deleted",
    "label_removed",
    "login",
    "login_failed",
    "logout",
    "page_children_reordered",
    "page_created",
    "page_moved",
    "page_removed",
    "page_restored",
    "page_trashed",
    "page_updated",
    "page_viewed",
    "relation_created",
    "relation_deleted",
    "search_performed",
    "space_created",
    "space_logo_updated",
    "space_permissions_updated",
    "space_removed",
    "space_updated",
    "theme_enabled",
    "user_created",
    "user_deactivated",
    "user_followed",
    "user_reactivated",
    "user_removed",
];

/// True for a name that can be an event: lower-case letters, digits and `_`, so it is safe
/// as a URL path segment and a metric label.
pub fn is_valid_event_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_complete_free_of_duplicates_and_valid() {
        let mut seen = std::collections::HashSet::new();
        for name in CONFLUENCE_WEBHOOK_EVENTS {
            assert!(is_valid_event_name(name), "{name}");
            assert!(seen.insert(*name), "{name} twice");
        }
        assert_eq!(CONFLUENCE_WEBHOOK_EVENTS.len(), 54);
        assert!(!is_valid_event_name("../etc"));
        assert!(!is_valid_event_name("Page_Created"));
    }
}
