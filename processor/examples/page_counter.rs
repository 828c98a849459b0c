//! A whole custom processor: counts page events per tenant in the tenant's state and, for a
//! created page, reads it back from Confluence.
//!
//! Run it with the usual settings (TRIBUTARY_DATABASE_URL, TRIBUTARY_KAFKA_BROKERS,
//! TRIBUTARY_SECRET_KEY, ...): `cargo run --example page_counter`. Stop it with Ctrl-C.

use tributary_common::{Config, shutdown, telemetry};
use tributary_processor::{Context, HandlerError, Processor};

fn main() -> std::process::ExitCode {
    tributary_processor::service::run_main(None, run)
}

async fn run(config: Config) -> anyhow::Result<()> {
    telemetry::init_tracing(&config.log_format);
    Processor::builder(config)
        .on("page_*", count_page_events)
        .on("page_created", fetch_new_page)
        .run(shutdown::on_signals())
        .await?;
    Ok(())
}

/// Effects through `ctx.state()` commit once per event, however often it is delivered.
async fn count_page_events(ctx: Context) -> Result<(), HandlerError> {
    let seen: u64 = ctx.state().get("page_events").await?.unwrap_or(0);
    ctx.state().set("page_events", &(seen + 1))?;
    println!("handled {} {}", ctx.event().id(), ctx.event().name());
    Ok(())
}

/// A Confluence call: 429s and 5xx are retried by the client, then by the runtime. It is
/// made as the user who created the page (the app's `ACT_AS_USER` scope), so Confluence
/// answers with what that user may see; as the app when the tenant cannot act as users.
async fn fetch_new_page(ctx: Context) -> Result<(), HandlerError> {
    let Some(id) = ctx.event().page().and_then(|page| page.id) else {
        return Err(HandlerError::permanent("page_created without a page id"));
    };
    let Some(tenant) = ctx.tenant().filter(|t| t.status.is_active()) else {
        return Ok(());
    };
    let confluence = if tenant.oauth_client_id.is_some() && ctx.event().user_account_id().is_some()
    {
        ctx.confluence_as_event_user()?
    } else {
        ctx.confluence()?
    };
    let page = confluence.get_page(&id).await?;
    tracing::info!(title = ?page.title, as_user = ?confluence.acting_user(), "new page");
    Ok(())
}
