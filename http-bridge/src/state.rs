//! What every handler shares.

use std::sync::Arc;

use sessiond_client::Client;
use tracing::{info, warn};

use crate::config::Config;
use crate::ops::Metrics;

/// Handler state: cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The sessiond client (pooled, reconnecting).
    pub client: Client,
    /// Settings.
    pub config: Arc<Config>,
    /// Request counters for `/metrics`.
    pub metrics: Arc<Metrics>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

impl AppState {
    /// State over `client`.
    ///
    /// # Errors
    /// A message naming a bad setting.
    pub fn new(client: Client, config: Config) -> Result<Self, String> {
        if config.admin_email.is_some() != config.admin_password.is_some() {
            return Err("--admin-email and --admin-password go together".into());
        }
        Ok(Self {
            client,
            config: Arc::new(config),
            metrics: Arc::new(Metrics::default()),
        })
    }

    /// Creates the configured first administrator if absent. A daemon that is
    /// not up yet only delays this: it is logged and the bridge starts anyway.
    pub async fn bootstrap(&self) {
        let (Some(email), Some(password)) = (&self.config.admin_email, &self.config.admin_password)
        else {
            return;
        };
        match crate::users::get_by_email(&self.client, email).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                let new = crate::users::NewUser {
                    email: email.clone(),
                    password: password.clone(),
                    is_admin: true,
                    ..Default::default()
                };
                match crate::users::create(&self.client, new).await {
                    Ok(_) => info!("administrator account created"),
                    Err(e) => warn!(error = %e, "cannot create the administrator account"),
                }
            }
            Err(e) => warn!(error = %e, "cannot check the administrator account"),
        }
    }
}
