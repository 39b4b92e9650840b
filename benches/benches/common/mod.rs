//! What the store benchmarks share: the sessions they create, shaped as the
//! load generator's (a 256-byte attribute, an owner among 10,000, a sliding
//! hour).

use sessiond_protocol::{Attrs, Create, Ttl, Value};

/// Attribute bytes per session.
pub const VALUE_SIZE: usize = 256;
/// Distinct owners (as the load generator uses).
pub const OWNERS: usize = 10_000;
/// The namespace every session goes in.
pub const NS: &str = "bench";

/// The attributes of every session: one `VALUE_SIZE`-byte string.
#[must_use]
pub fn attrs() -> Attrs {
    let mut attrs = Attrs::new();
    attrs.insert("data".into(), Value::Str("x".repeat(VALUE_SIZE)));
    attrs
}

/// The `i`-th session's create.
#[must_use]
pub fn create_args(i: usize, attrs: &Attrs) -> Create {
    Create {
        namespace: NS.into(),
        id: None,
        owner: Some(format!("user{}", i % OWNERS)),
        ttl: Ttl {
            idle_ttl_ms: Some(3_600_000),
            max_lifetime_ms: None,
        },
        attrs: attrs.clone(),
        owner_limit: None,
    }
}
