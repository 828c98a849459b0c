//! Acting as the user who caused the event: the handler API over
//! [`ConfluenceClient::as_user`].

use crate::confluence::{ConfluenceClient, ConfluenceError};
use crate::context::Context;
use crate::handler::HandlerError;

impl Context {
    /// A Confluence REST client for the event's tenant acting as the user who caused the
    /// event (the webhook's `userAccountId`), so Confluence applies that user's permissions
    /// and records the user as the author of any change. Needs the app's `ACT_AS_USER`
    /// scope and a Connect installation with an `oauthClientId`.
    ///
    /// Fails permanently when the event names no user (anonymous or system events), when
    /// the tenant has no `oauthClientId`, or when it has only a Forge installation (whose
    /// calls carry the app system token, never a user's).
    pub fn confluence_as_event_user(&self) -> Result<ConfluenceClient, HandlerError> {
        let event = self.event();
        let Some(account_id) = event.user_account_id().filter(|id| !id.is_empty()) else {
            return Err(HandlerError::permanent(format!(
                "event {} ({}) names no user (no userAccountId), so there is no user to act as",
                event.id(),
                event.name()
            )));
        };
        let Some(tenant) = self.tenant() else {
            if self.forge_installation().is_some() {
                return Err(HandlerError::permanent(format!(
                    "tenant {} has only a Forge installation, whose calls carry the app \
                     system token: acting as a user needs a Connect installation",
                    event.client_key()
                )));
            }
            // Not installed at all: the same error as acting as the app.
            return self.confluence();
        };
        if tenant.oauth_client_id.as_deref().is_none_or(str::is_empty) {
            return Err(HandlerError::permanent(format!(
                "tenant {}: {}",
                tenant.client_key,
                ConfluenceError::NoOAuthClientId
            )));
        }
        Ok(self.confluence()?.as_user(account_id))
    }
}
