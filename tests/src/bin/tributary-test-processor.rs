//! The processor the end-to-end tests run: for every webhook event it appends the event id
//! to its tenant's state (an effect that must happen exactly once) and leaves one comment
//! on the event's page in Confluence (a call that happens at least once).
//!
//! Settings come from `TRIBUTARY_*` variables like every Tributary service.

use tributary_common::{Config, shutdown, telemetry};
use tributary_processor::{Context, HandlerError, Processor};
use tributary_tests::{HANDLED_KEY, HANDLER_NAME};

fn main() -> std::process::ExitCode {
    tributary_processor::service::run_main(None, run)
}

async fn run(config: Config) -> anyhow::Result<()> {
    telemetry::init_tracing(&config.log_format);
    Processor::builder(config)
        .on_named(HANDLER_NAME, "*", record_and_comment)
        .run(shutdown::on_signals())
        .await?;
    Ok(())
}

async fn record_and_comment(ctx: Context) -> Result<(), HandlerError> {
    if ctx.event().lifecycle().is_some() {
        return Ok(());
    }
    let mut handled: Vec<String> = ctx.state().get(HANDLED_KEY).await?.unwrap_or_default();
    handled.push(ctx.event().id().to_string());
    ctx.state().set(HANDLED_KEY, &handled)?;
    let Some(page_id) = ctx.event().page().and_then(|page| page.id) else {
        return Err(HandlerError::permanent("the event names no page"));
    };
    ctx.confluence()?
        .add_comment(&page_id, &format!("<p>{}</p>", ctx.event().id()))
        .await?;
    Ok(())
}
