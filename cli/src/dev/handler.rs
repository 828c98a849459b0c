//! The handler `tributary dev` runs beside the built-in ones: it answers page events by
//! calling the tenant's Confluence back, so the logs show the round trip.

use tributary_common::store::ForgeStatus;
use tributary_processor::{Context, Handler, HandlerError};

/// The handler's name, which keys its handled-event records.
pub const NAME: &str = "dev.demo";
/// The events it subscribes to.
pub const PATTERN: &str = "page_*";

/// Reads every created or updated page back from Confluence, whether Connect or Forge
/// delivered the event (a Forge site is called through its API base URL). With `write_back`
/// (only against the simulated Confluence, never a real site) it also comments on new pages
/// and labels updated ones. With `only_host`, tenants living elsewhere (Forge-only sites
/// included) are left alone.
pub fn demo_handler(write_back: bool, only_host: Option<String>) -> impl Handler {
    move |ctx: Context| {
        let only_host = only_host.clone();
        async move {
            if let Some(host) = &only_host {
                let elsewhere = ctx.tenant().is_none_or(|tenant| {
                    url::Url::parse(&tenant.base_url)
                        .ok()
                        .and_then(|u| u.host_str().map(|h| h != host))
                        .unwrap_or(true)
                });
                if elsewhere {
                    return Ok(());
                }
            }
            let event = ctx.event();
            let name = event.name().to_string();
            if !matches!(name.as_str(), "page_created" | "page_updated") {
                return Ok(());
            }
            let Some(page_id) = event.page().and_then(|page| page.id) else {
                return Err(HandlerError::permanent(format!("{name} without a page id")));
            };
            let active = ctx.tenant().is_some_and(|t| t.status.is_active())
                || ctx
                    .forge_installation()
                    .is_some_and(|i| i.status == ForgeStatus::Installed);
            if !active {
                tracing::info!(event = %name, "demo handler: tenant not active, nothing to do");
                return Ok(());
            }
            let confluence = ctx.confluence()?;
            let page = confluence.get_page(&page_id).await?;
            let title = page.title.unwrap_or_default();
            tracing::info!(
                event = %name, source = ?event.source(), page_id = %page_id, title = %title,
                "demo handler: Confluence REST answered GET page"
            );
            if write_back {
                if name == "page_created" {
                    confluence
                        .add_comment(
                            &page_id,
                            "<p>Welcome! A Tributary handler saw this page being created.</p>",
                        )
                        .await?;
                    tracing::info!(page_id = %page_id, "demo handler: Confluence REST answered POST comment");
                } else {
                    confluence.add_label(&page_id, "seen-by-tributary").await?;
                    tracing::info!(page_id = %page_id, "demo handler: Confluence REST answered POST label");
                }
            }
            Ok(())
        }
    }
}
