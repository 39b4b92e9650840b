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
    /// The rate limit of the routes that create sessions without credentials.
    pub create_limiter: Arc<crate::guard::RateLimiter>,
    /// The server loop's counters.
    pub serve_metrics: Arc<crate::serve::ServeMetrics>,
    /// Until when (ms since the epoch) the store is known full: a write was
    /// refused for memory then (see [`AppState::mark_store_full`]).
    pub store_full_until_ms: Arc<std::sync::atomic::AtomicU64>,
    /// The keys JWTs are verified with (read at start-up).
    pub jwt: Arc<crate::apis::scheduled::bearer::JwtKeys>,
    /// Cancelled when the bridge shuts down: long-lived responses (the
    /// `/events` stream) end on it instead of holding the shutdown up.
    pub shutdown: tokio_util::sync::CancellationToken,
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
        let jwt = crate::apis::scheduled::bearer::JwtKeys::load(
            config.jwt_secret.as_deref(),
            config.jwt_public_key.as_deref(),
        )?;
        Ok(Self {
            client,
            jwt: Arc::new(jwt),
            create_limiter: Arc::new(crate::guard::RateLimiter::new(
                config.create_rate,
                config.create_burst,
            )),
            config: Arc::new(config),
            metrics: Arc::new(Metrics::default()),
            serve_metrics: Arc::default(),
            store_full_until_ms: Arc::default(),
            shutdown: tokio_util::sync::CancellationToken::new(),
        })
    }

    /// Whether the store refused a write for memory in the last few seconds.
    #[must_use]
    pub fn store_full(&self) -> bool {
        now_ms()
            < self
                .store_full_until_ms
                .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Notes that a write was refused for memory: the store counts as full
    /// for the next 10 s (`/healthz` reports it).
    pub fn mark_store_full(&self) {
        self.store_full_until_ms
            .store(now_ms() + 10_000, std::sync::atomic::Ordering::Relaxed);
    }

    /// Creates the configured first administrator if absent. A daemon that is
    /// not up yet only delays this: it is logged and the bridge starts anyway.
    pub async fn bootstrap(&self) {
        if let Err(e) = crate::users::ensure_decoy(&self.client).await {
            warn!(error = %e, "cannot create the login decoy record (unknown-email logins read a missing record until it exists)");
        }
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

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
