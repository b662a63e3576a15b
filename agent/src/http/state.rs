//! [`AppState`]: what every handler reaches — the agent's shared [`Handles`] (the same
//! ones D-Bus gets) and the [`Authenticator`] the `signed` middleware checks requests with.

use std::sync::Arc;

use super::auth::Authenticator;
use crate::handles::Handles;

/// The router's state.
#[derive(Debug, Clone)]
pub struct AppState {
    pub agent: Handles,
    pub auth: Arc<Authenticator>,
}
