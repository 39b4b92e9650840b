//! The `sessionctl` command: talk to a sessiond daemon from the shell.
//!
//! Human-readable output by default, `--json` for scripts. Exit status: 0 on
//! success, 1 when the session asked for does not exist, 2 on any error
//! (usage, connection, daemon).
//!
//! JSON output: ids are UUID strings, times RFC 3339 in UTC, attributes their
//! natural JSON value (`Bytes` as an array of numbers, a windowed counter as
//! `{"counter": n, "reset_at": time}`). `list` follows the cursor and prints
//! every session of the owner, fetching `--page-size` at a time. The auth
//! token (`--token` / `SESSIOND_TOKEN`) is never printed.
//!
//! `watch` prints one event per line (with `--json` one JSON object per
//! line, see [`event_json`]) as long as it runs; session ids are printed
//! (the event is about them: whoever may watch may read them), attributes
//! never are.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Map};
use sessiond_protocol::duration::{format_duration, parse_duration};

use crate::events::{kind_name, reason_name};
use crate::{
    AuthToken, Client, ClientConfig, CreateOptions, Event, EventKind, EventsFrom, Session,
    SessionId, StatsReply, SubscribeOptions, Value,
};

/// The `sessionctl` command line.
#[derive(Debug, Parser)]
#[command(
    name = "sessionctl",
    version,
    about = "Command-line client of the sessiond session store"
)]
pub struct Cli {
    /// Daemon address; for a replicated group, several comma-separated
    /// (requests follow the leader).
    #[arg(
        long,
        env = "SESSIOND_ADDR",
        default_value = "127.0.0.1:7379",
        global = true
    )]
    pub addr: String,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Time allowed for connecting and for each request (e.g. 500ms, 5s).
    #[arg(long, default_value = "5s", value_parser = duration_arg, global = true)]
    pub timeout: Duration,
    /// Connect over TLS, verifying the daemon against the system's trusted roots.
    #[arg(long, global = true)]
    pub tls: bool,
    /// Connect over TLS, verifying the daemon against this CA certificate (PEM).
    #[arg(long, global = true, value_name = "FILE")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// Auth token for the handshake, if the daemon requires one. Prefer the
    /// environment variable: a flag is visible to other users in `ps`.
    #[arg(
        long,
        env = "SESSIOND_TOKEN",
        hide_env_values = true,
        value_parser = token_arg,
        global = true
    )]
    pub token: Option<AuthToken>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `sessionctl` subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the daemon answers; prints the round-trip time.
    Ping,
    /// Create a session; prints its id.
    Create(CreateArgs),
    /// Show a session (exit status 1 if there is none).
    Get {
        /// Namespace of the session.
        #[arg(short = 'n', long)]
        namespace: String,
        /// Session id (a UUID).
        id: String,
        /// Also slide the session's idle deadline.
        #[arg(long)]
        touch: bool,
    },
    /// Slide a session's idle deadline (exit status 1 if there is none).
    Touch {
        /// Namespace of the session.
        #[arg(short = 'n', long)]
        namespace: String,
        /// Session id (a UUID).
        id: String,
    },
    /// Delete a session (exit status 1 if there was none).
    Delete {
        /// Namespace of the session.
        #[arg(short = 'n', long)]
        namespace: String,
        /// Session id (a UUID).
        id: String,
    },
    /// List every live session of an owner, oldest first.
    List {
        /// Namespace of the sessions.
        #[arg(short = 'n', long)]
        namespace: String,
        /// The owner.
        #[arg(long)]
        owner: String,
        /// Sessions fetched per request (the whole list is printed).
        #[arg(long, default_value_t = 100)]
        page_size: u32,
    },
    /// Show the daemon's counters.
    Stats,
    /// A replicated group's membership.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Print session events as they happen, one per line, until
    /// interrupted (resubscribing by itself after a dropped connection).
    /// Exit status 2 if the daemon refuses, or if `--from` is older than
    /// the events it holds (the message names the oldest cursor held).
    Watch(WatchArgs),
}

/// Arguments of `sessionctl watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// A namespace to watch (repeatable; none: every namespace the token may read).
    #[arg(short = 'n', long = "namespace", value_name = "NS")]
    pub namespaces: Vec<String>,
    /// Start after this cursor (the last one seen before).
    #[arg(long, value_name = "CURSOR", conflicts_with = "oldest")]
    pub from: Option<u64>,
    /// Start with the oldest event the daemon holds.
    #[arg(long)]
    pub oldest: bool,
    /// Also print attribute and ttl changes.
    #[arg(long)]
    pub updates: bool,
    /// Also print touches (sliding deadlines moved).
    #[arg(long)]
    pub touches: bool,
}

impl WatchArgs {
    /// The subscription these arguments ask for.
    #[must_use]
    pub fn options(&self) -> SubscribeOptions {
        let from = match (self.from, self.oldest) {
            (Some(c), _) => EventsFrom::After(c),
            (None, true) => EventsFrom::Oldest,
            (None, false) => EventsFrom::Now,
        };
        SubscribeOptions::new()
            .namespaces(self.namespaces.iter().cloned())
            .updates(self.updates)
            .touches(self.touches)
            .from(from)
    }
}

/// `sessionctl cluster` subcommands.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Each member's id, address and role, and the leader (as the member
    /// connected to sees them); exit status 1 if no leader is known.
    Status,
    /// Add a member: it catches up as a learner, then votes.
    AddNode {
        /// The new member's id.
        id: u64,
        /// Its inter-node address (HOST:PORT, as in its --cluster entry).
        addr: String,
    },
    /// Remove a member from the group.
    RemoveNode {
        /// The member's id.
        id: u64,
    },
}

/// Arguments of `sessionctl create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Namespace of the session.
    #[arg(short = 'n', long)]
    pub namespace: String,
    /// Owner (user id) of the session.
    #[arg(long)]
    pub owner: Option<String>,
    /// Sliding expiry, e.g. 30m.
    #[arg(long, value_parser = duration_arg)]
    pub idle_ttl: Option<Duration>,
    /// Absolute expiry after creation, e.g. 12h.
    #[arg(long, value_parser = duration_arg)]
    pub max_lifetime: Option<Duration>,
    /// An attribute: `name=text` for a string, `name:=json` for a number,
    /// boolean, null or string written as JSON (e.g. `visits:=3`). Repeatable.
    #[arg(long = "attr", value_name = "NAME=VALUE")]
    pub attrs: Vec<String>,
    /// Use this id (a UUID) instead of a fresh one; fails if it is taken.
    #[arg(long)]
    pub id: Option<String>,
}

fn token_arg(s: &str) -> Result<AuthToken, String> {
    // Kept as an `AuthToken` from here on, so `Debug` of `Cli` never shows it.
    Ok(AuthToken(s.to_owned()))
}

fn duration_arg(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

/// Runs `sessionctl` with the process's arguments.
#[must_use]
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs one command; the exit status on success or "not found".
///
/// # Errors
/// Connection, daemon and argument errors.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut config = ClientConfig::new(cli.addr.clone())
        .connections(1)
        .connect_timeout(cli.timeout)
        .request_timeout(cli.timeout)
        .client_name("sessionctl");
    if let Some(token) = cli.token {
        config = config.auth_token(token.0);
    }
    if let Some(ca) = &cli.tls_ca {
        config = config.tls(crate::TlsConfig::with_ca_file(ca)?);
    } else if cli.tls {
        config = config.tls(crate::TlsConfig::system_roots()?);
    }
    let client = Client::connect_with(config).await?;
    let json = cli.json;
    // Not found is an answer, not an error: a message on stderr, status 1,
    // and with --json also a JSON object on stdout for scripts that parse it.
    let not_found = |what: &str| {
        if json {
            println!("{}", json!({ "found": false }));
        }
        eprintln!("{what}");
        Ok(ExitCode::from(1))
    };
    match cli.command {
        Command::Ping => {
            let rtt = client.ping().await?;
            if json {
                println!("{}", json!({ "ok": true, "rtt_us": rtt.as_micros() }));
            } else {
                println!("PONG in {}µs", rtt.as_micros());
            }
        }
        Command::Create(args) => {
            let namespace = args.namespace.clone();
            let session = client.create(&namespace, create_options(args)?).await?;
            if json {
                println!("{}", session_json(&session));
            } else {
                println!("{}", session.id);
                print_session(&session);
            }
        }
        Command::Get {
            namespace,
            id,
            touch,
        } => {
            let id = parse_id(&id)?;
            let found = if touch {
                client.get_and_touch(&namespace, id).await?
            } else {
                client.get(&namespace, id).await?
            };
            let Some(session) = found else {
                return not_found("no such session");
            };
            if json {
                println!("{}", session_json(&session));
            } else {
                println!("id:           {}", session.id);
                print_session(&session);
            }
        }
        Command::Touch { namespace, id } => {
            let t = client.touch(&namespace, parse_id(&id)?).await?;
            if !t.found {
                return not_found("no such session");
            }
            if json {
                println!(
                    "{}",
                    json!({ "found": true, "expires_at": t.expires_at_ms.map(rfc3339) })
                );
            } else {
                println!(
                    "expires at {}",
                    t.expires_at_ms.map_or("never".into(), rfc3339)
                );
            }
        }
        Command::Delete { namespace, id } => {
            if !client.delete(&namespace, parse_id(&id)?).await? {
                return not_found("no such session");
            }
            if json {
                println!("{}", json!({ "deleted": true }));
            } else {
                println!("deleted");
            }
        }
        Command::List {
            namespace,
            owner,
            page_size,
        } => {
            let mut all = Vec::new();
            let mut after = None;
            loop {
                let page = client
                    .list_by_owner(&namespace, &owner, after, page_size)
                    .await?;
                all.extend(page.sessions);
                match page.next {
                    Some(c) => after = Some(c),
                    None => break,
                }
            }
            if json {
                let items: Vec<_> = all.iter().map(session_json).collect();
                println!("{}", serde_json::Value::Array(items));
            } else if all.is_empty() {
                println!("no sessions");
            } else {
                for s in &all {
                    println!(
                        "{}  created {}  expires {}",
                        s.id,
                        rfc3339(s.created_at_ms),
                        s.expires_at_ms.map_or("never".into(), rfc3339)
                    );
                }
            }
        }
        Command::Stats => {
            let stats = client.stats().await?;
            if json {
                println!("{}", stats_json(&stats));
            } else {
                print_stats(&stats);
            }
        }
        Command::Cluster(c) => {
            let status = match c {
                ClusterCommand::Status => client.cluster_status().await?,
                ClusterCommand::AddNode { id, addr } => client.cluster_add_node(id, &addr).await?,
                ClusterCommand::RemoveNode { id } => client.cluster_remove_node(id).await?,
            };
            print_cluster(&status, json);
            if status.leader_id.is_none() {
                // Scripts and readiness probes: no leader known is not ready.
                eprintln!("no leader known");
                return Ok(ExitCode::from(1));
            }
        }
        Command::Watch(args) => {
            let mut events = client.subscribe(args.options());
            // The pool is not needed past the handshake that checked the
            // address and credentials.
            drop(client);
            while let Some(event) = events.next_event().await {
                let event = event?;
                if json {
                    println!("{}", event_json(&event));
                } else {
                    println!("{}", event_line(&event));
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// An event as one JSON object: `cursor`, `at` (RFC 3339), `at_ms`,
/// `namespace`, `id`, `owner`, `kind`, and by kind `to` (rotated),
/// `reason` (deleted), `version` (updated), `expires_at` (touched).
#[must_use]
pub fn event_json(e: &Event) -> serde_json::Value {
    let mut v = json!({
        "cursor": e.cursor,
        "at": rfc3339(e.at_ms),
        "at_ms": e.at_ms,
        "namespace": e.namespace,
        "id": e.id.to_string(),
        "owner": e.owner,
        "kind": kind_name(&e.kind),
    });
    match e.kind {
        EventKind::Rotated { to } => v["to"] = json!(to.to_string()),
        EventKind::Deleted { reason } => v["reason"] = json!(reason_name(reason)),
        EventKind::Updated { version } => v["version"] = json!(version),
        EventKind::Touched { expires_at_ms } => {
            v["expires_at"] = json!(expires_at_ms.map(rfc3339));
        }
        EventKind::Created | EventKind::Expired => {}
    }
    v
}

/// An event as one line of text: cursor, time, namespace, what happened,
/// id, owner (`-` if none).
#[must_use]
pub fn event_line(e: &Event) -> String {
    let what = match e.kind {
        EventKind::Rotated { to } => format!("rotated(to {to})"),
        EventKind::Deleted { reason } => format!("deleted({})", reason_name(reason)),
        EventKind::Updated { version } => format!("updated(version {version})"),
        EventKind::Touched { expires_at_ms } => format!(
            "touched(expires {})",
            expires_at_ms.map_or("never".into(), rfc3339)
        ),
        EventKind::Created | EventKind::Expired => kind_name(&e.kind).to_owned(),
    };
    format!(
        "{}  {}  {}  {}  {}  {}",
        e.cursor,
        rfc3339(e.at_ms),
        e.namespace,
        what,
        e.id,
        e.owner.as_deref().unwrap_or("-")
    )
}

fn print_cluster(c: &sessiond_protocol::ClusterStatusReply, json: bool) {
    if json {
        let members: Vec<_> = c
            .members
            .iter()
            .map(|m| {
                json!({
                    "id": m.node_id,
                    "addr": m.addr,
                    "client_addr": m.client_addr,
                    "role": m.role,
                    "voter": m.voter,
                    "matched_index": m.matched_index,
                })
            })
            .collect();
        println!(
            "{}",
            json!({
                "node_id": c.node_id,
                "leader": c.leader_id,
                "term": c.term,
                "commit_index": c.commit_index,
                "applied_index": c.applied_index,
                "members": members,
            })
        );
        return;
    }
    println!(
        "member {} (term {}, commit {}, applied {}), leader: {}",
        c.node_id,
        c.term,
        c.commit_index,
        c.applied_index,
        c.leader_id.map_or("none".into(), |l| l.to_string())
    );
    for m in &c.members {
        println!(
            "  {:>3}  {:<9}  {}  client {}",
            m.node_id,
            m.role,
            m.addr,
            m.client_addr.as_deref().unwrap_or("?")
        );
    }
}

fn parse_id(s: &str) -> anyhow::Result<SessionId> {
    // The error never echoes the input: it may be someone's live session id.
    s.parse().map_err(|e| anyhow!("{e}"))
}

fn create_options(args: CreateArgs) -> anyhow::Result<CreateOptions> {
    let mut o = CreateOptions::new();
    if let Some(owner) = args.owner {
        o = o.owner(owner);
    }
    if let Some(d) = args.idle_ttl {
        o = o.idle_ttl(d);
    }
    if let Some(d) = args.max_lifetime {
        o = o.max_lifetime(d);
    }
    if let Some(id) = args.id {
        o = o.id(parse_id(&id)?);
    }
    for a in &args.attrs {
        let (name, value) = parse_attr(a)?;
        o = o.attr(name, value);
    }
    Ok(o)
}

/// `name=text` or `name:=json`.
fn parse_attr(s: &str) -> anyhow::Result<(String, Value)> {
    let Some(eq) = s.find('=') else {
        bail!("attribute {s:?} is not NAME=VALUE or NAME:=JSON");
    };
    let (name, value) = (&s[..eq], &s[eq + 1..]);
    if let Some(name) = name.strip_suffix(':') {
        let parsed: serde_json::Value = serde_json::from_str(value)
            .with_context(|| format!("attribute {name:?}: {value:?} is not JSON"))?;
        let value = match parsed {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            serde_json::Value::String(s) => Value::Str(s),
            _ => bail!("attribute {name:?}: arrays and objects are not attribute values"),
        };
        return Ok((name.to_owned(), value));
    }
    if name.is_empty() {
        bail!("attribute {s:?} has no name");
    }
    Ok((name.to_owned(), Value::Str(value.to_owned())))
}

fn rfc3339(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(DateTime::<Utc>::from_timestamp_millis)
        .map_or_else(
            || format!("{ms}ms"),
            |t| t.to_rfc3339_opts(SecondsFormat::Millis, true),
        )
}

/// An attribute as natural JSON; bytes become an array of numbers and a
/// windowed counter an object.
fn value_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => json!(b),
        Value::Int(i) => json!(i),
        Value::Float(f) => json!(f),
        Value::Str(s) => json!(s),
        Value::Bytes(b) => json!(b),
        Value::Counter { value, reset_at_ms } => {
            json!({ "counter": value, "reset_at": rfc3339(*reset_at_ms) })
        }
    }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::Str(s) => format!("{s:?}"),
        other => value_json(other).to_string(),
    }
}

fn session_json(s: &Session) -> serde_json::Value {
    let attrs: Map<String, serde_json::Value> = s
        .attrs
        .iter()
        .map(|(k, v)| (k.clone(), value_json(v)))
        .collect();
    json!({
        "namespace": s.namespace,
        "id": s.id.to_string(),
        "owner": s.owner,
        "created_at": rfc3339(s.created_at_ms),
        "last_active": rfc3339(s.last_active_ms),
        "expires_at": s.expires_at_ms.map(rfc3339),
        "idle_ttl_ms": s.ttl.idle_ttl_ms,
        "max_lifetime_ms": s.ttl.max_lifetime_ms,
        "version": s.version,
        "attrs": attrs,
    })
}

fn print_session(s: &Session) {
    let ms =
        |v: Option<u64>| v.map_or("none".into(), |m| format_duration(Duration::from_millis(m)));
    println!("namespace:    {}", s.namespace);
    println!("owner:        {}", s.owner.as_deref().unwrap_or("-"));
    println!("created:      {}", rfc3339(s.created_at_ms));
    println!("last active:  {}", rfc3339(s.last_active_ms));
    println!(
        "expires:      {}",
        s.expires_at_ms.map_or("never".into(), rfc3339)
    );
    println!("idle ttl:     {}", ms(s.ttl.idle_ttl_ms));
    println!("max lifetime: {}", ms(s.ttl.max_lifetime_ms));
    println!("version:      {}", s.version);
    for (k, v) in &s.attrs {
        println!("attr {k} = {}", value_text(v));
    }
}

fn stats_json(s: &StatsReply) -> serde_json::Value {
    let namespaces: Map<String, serde_json::Value> = s
        .namespaces
        .iter()
        .map(|n| (n.namespace.clone(), json!(n.records)))
        .collect();
    json!({
        "server_version": s.server_version,
        "uptime_ms": s.uptime_ms,
        "records": s.records,
        "namespaces": namespaces,
        "expired_total": s.expired_total,
        "evicted_total": s.evicted_total,
        "ops_total": s.ops_total,
        "connections_current": s.connections_current,
        "connections_total": s.connections_total,
        "memory_bytes": s.memory_bytes,
    })
}

fn print_stats(s: &StatsReply) {
    println!("version:      {}", s.server_version);
    println!(
        "uptime:       {}",
        format_duration(Duration::from_millis(s.uptime_ms))
    );
    println!("records:      {}", s.records);
    for n in &s.namespaces {
        println!("  {:<20} {}", n.namespace, n.records);
    }
    println!("expired:      {}", s.expired_total);
    println!("evicted:      {}", s.evicted_total);
    println!("ops served:   {}", s.ops_total);
    println!(
        "connections:  {} open, {} since start",
        s.connections_current, s.connections_total
    );
    println!("memory:       ~{} bytes", s.memory_bytes);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn attrs_parse_as_text_or_json() {
        assert_eq!(
            parse_attr("role=admin").unwrap(),
            ("role".into(), Value::Str("admin".into()))
        );
        assert_eq!(
            parse_attr("eq=a=b").unwrap(),
            ("eq".into(), Value::Str("a=b".into()))
        );
        assert_eq!(parse_attr("n:=3").unwrap(), ("n".into(), Value::Int(3)));
        assert_eq!(
            parse_attr("f:=1.5").unwrap(),
            ("f".into(), Value::Float(1.5))
        );
        assert_eq!(
            parse_attr("b:=true").unwrap(),
            ("b".into(), Value::Bool(true))
        );
        assert_eq!(
            parse_attr("s:=\"x\"").unwrap(),
            ("s".into(), Value::Str("x".into()))
        );
        assert!(parse_attr("novalue").is_err());
        assert!(parse_attr("=x").is_err());
        assert!(parse_attr("a:=[1]").is_err());
        assert!(parse_attr("a:=nope").is_err());
    }

    #[test]
    fn cli_parses_the_documented_forms() {
        let cli = Cli::try_parse_from([
            "sessionctl",
            "create",
            "--namespace",
            "app",
            "--owner",
            "alice",
            "--idle-ttl",
            "30m",
        ])
        .unwrap();
        match cli.command {
            Command::Create(a) => {
                assert_eq!(a.idle_ttl, Some(Duration::from_secs(1800)));
                assert_eq!(a.owner.as_deref(), Some("alice"));
            }
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from(["sessionctl", "--json", "get", "-n", "app", "x"]).unwrap();
        assert!(cli.json);
        assert!(
            Cli::try_parse_from(["sessionctl", "create", "-n", "a", "--idle-ttl", "5"]).is_err()
        );
    }

    #[test]
    fn watch_parses_its_flags() {
        let cli = Cli::try_parse_from([
            "sessionctl",
            "--json",
            "watch",
            "-n",
            "a",
            "--namespace",
            "b",
            "--from",
            "41",
            "--updates",
        ])
        .unwrap();
        assert!(cli.json);
        let Command::Watch(args) = cli.command else {
            panic!("not watch")
        };
        let sessiond_protocol::Op::Subscribe(s) = args.options().into_op() else {
            panic!("not subscribe")
        };
        assert_eq!(s.namespaces, ["a", "b"]);
        assert_eq!(s.from, EventsFrom::After(41));
        assert!(s.updates && !s.touches);
        let cli = Cli::try_parse_from(["sessionctl", "watch", "--oldest"]).unwrap();
        let Command::Watch(args) = cli.command else {
            panic!("not watch")
        };
        let sessiond_protocol::Op::Subscribe(s) = args.options().into_op() else {
            panic!("not subscribe")
        };
        assert_eq!(s.from, EventsFrom::Oldest);
        assert!(s.namespaces.is_empty());
        assert!(Cli::try_parse_from(["sessionctl", "watch", "--oldest", "--from", "3"]).is_err());
    }

    #[test]
    fn events_print_as_a_line_and_as_json() {
        let id: SessionId = "67e55044-10b1-426f-9247-bb680e5fe0c8".parse().unwrap();
        let to: SessionId = "00000000-0000-4000-8000-000000000001".parse().unwrap();
        let mut e = Event {
            cursor: 42,
            at_ms: 1_700_000_000_123,
            namespace: "app".into(),
            id,
            owner: Some("alice".into()),
            kind: EventKind::Deleted {
                reason: sessiond_protocol::DeleteReason::LogoutEverywhere,
            },
        };
        assert_eq!(
            event_line(&e),
            "42  2023-11-14T22:13:20.123Z  app  deleted(logout_everywhere)  \
             67e55044-10b1-426f-9247-bb680e5fe0c8  alice"
        );
        let v = event_json(&e);
        assert_eq!(v["cursor"], 42);
        assert_eq!(v["kind"], "deleted");
        assert_eq!(v["reason"], "logout_everywhere");
        assert_eq!(v["id"], "67e55044-10b1-426f-9247-bb680e5fe0c8");
        assert_eq!(v["at"], "2023-11-14T22:13:20.123Z");
        e.kind = EventKind::Rotated { to };
        e.owner = None;
        assert!(event_line(&e).contains(&format!("rotated(to {to})")));
        assert!(event_line(&e).ends_with("  -"));
        assert_eq!(event_json(&e)["to"], to.to_string());
        assert_eq!(event_json(&e)["owner"], serde_json::Value::Null);
    }

    #[test]
    fn bad_ids_are_not_echoed() {
        let err = parse_id("secret-looking-value").unwrap_err().to_string();
        assert!(!err.contains("secret"), "{err}");
    }
}
