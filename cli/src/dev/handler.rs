//! The handler `tributary dev` runs beside the built-in ones: it answers page events by
//! calling the tenant's Confluence back, so the logs show the round trip.

use tributary_common::store::ForgeStatus;
use tributary_processor::{Context, Handler, HandlerError};

/// The handler's name, which keys its handled-event records.
pub const NAME: &str = "dev.demo";
/// The events it subscribes to.
pub const PATTERN: &str = "page_*";

/// What the demo handler does beyond reading pages back.
#[derive(Debug, Clone, Default)]
pub struct DemoHandlerOptions {
    /// Comment on new pages and label updated ones: only against the simulated Confluence,
    /// never a real site.
    pub write_back: bool,
    /// Read each new page of a Connect tenant a second time, as the user who created it
    /// (the app's `ACT_AS_USER` scope; the authorization server must grant for the site).
    pub act_as_user: bool,
    /// Leave tenants living on other hosts (Forge-only sites included) alone.
    pub only_host: Option<String>,
}

/// Reads every created or updated page back from Confluence, whether Connect or Forge
/// delivered the event (a Forge site is called through its API base URL), and does what
/// `options` adds.
pub fn demo_handler(options: DemoHandlerOptions) -> impl Handler {
    move |ctx: Context| {
        let DemoHandlerOptions {
            write_back,
            act_as_user,
            only_host,
        } = options.clone();
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
            // A Forge-only site has no user to act as: its calls carry the app system token.
            if act_as_user && name == "page_created" && ctx.tenant().is_some() {
                let as_user = ctx.confluence_as_event_user()?;
                let page = as_user.get_page(&page_id).await?;
                tracing::info!(
                    page_id = %page_id, title = %page.title.unwrap_or_default(),
                    user = %as_user.acting_user().unwrap_or_default(),
                    "demo handler: Confluence REST answered GET page as the user who created it"
                );
            }
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
