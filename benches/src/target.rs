//! The systems under load, behind one interface: sessiond through its client,
//! Redis through redis-rs, and the HTTP bridge's user-session-cache API
//! through a pooled HTTP/1.1 client ([`crate::http`]), each expressing the
//! same session workload in its own terms.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use futures::future::join_all;
use redis::aio::MultiplexedConnection;
use sessiond_client::{
    protocol, Client, ClientConfig, CreateOptions, Op, SessionId, UpdateOptions, Value,
};

use crate::http::{Answer, Http};

/// One request kind of a workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Create a session with an owner and an idle ttl.
    Create,
    /// Read a session.
    Get,
    /// Read a session and slide its ttl.
    GetTouch,
    /// Overwrite a session's data.
    Update,
    /// Create a session and delete it again.
    CreateDelete,
}

/// How sessions are named in Redis.
fn redis_key(i: usize) -> String {
    format!("s:{i:012}")
}

/// A target and its connections.
#[derive(Clone)]
pub enum Target {
    /// sessiond.
    Sessiond {
        /// The pooled client.
        client: Client,
        /// Ids of preloaded sessions, by key index.
        ids: Arc<Vec<SessionId>>,
    },
    /// Redis.
    Redis {
        /// One multiplexed connection per `--connections`.
        conns: Arc<Vec<MultiplexedConnection>>,
        /// Round robin over `conns`.
        next: Arc<AtomicUsize>,
        /// Also maintain an owner set (SADD), as sessiond's owner index does.
        indexed: bool,
        /// `WAIT N 0` after each write.
        wait: Option<u32>,
        /// Preloaded key count.
        keyspace: usize,
    },
    /// The HTTP bridge's user-session-cache API.
    Http {
        /// The pooled client.
        http: Arc<Http>,
        /// Preloaded user count.
        keyspace: usize,
    },
}

/// Settings every target needs.
#[derive(Debug, Clone)]
pub struct Shape {
    /// Connections to open.
    pub connections: usize,
    /// Attribute size in bytes.
    pub value_size: usize,
    /// Sessions' idle ttl.
    pub ttl: Duration,
    /// Redis: maintain owner sets.
    pub indexed: bool,
    /// Redis: `WAIT N 0` after each write.
    pub redis_wait: Option<u32>,
    /// sessiond: give each session an owner (one of 10,000).
    pub owner: bool,
    /// Random letters in values instead of one repeated letter.
    pub random_values: bool,
}

impl Shape {
    /// The attribute value of request `i`: `fill` repeated, or random
    /// letters (from `i`) with `--random-values`.
    fn value(&self, i: usize, fill: char) -> String {
        if !self.random_values {
            return fill.to_string().repeat(self.value_size);
        }
        // xorshift64*, seeded from the request number: cheap and not
        // compressible.
        let mut x = (i as u64 ^ 0x9E37_79B9_7F4A_7C15) | 1;
        (0..self.value_size)
            .map(|_| {
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 58;
                char::from(b'a' + (r % 26) as u8)
            })
            .collect()
    }
}

impl Target {
    /// Connects to `url`: `sessiond://HOST:PORT`, `redis://HOST:PORT` or
    /// `http://HOST:PORT`.
    ///
    /// # Errors
    /// An unknown scheme or a failed connection.
    pub async fn connect(url: &str, shape: &Shape) -> anyhow::Result<Self> {
        if let Some(addr) = url.strip_prefix("sessiond://") {
            let client = Client::connect_with(
                ClientConfig::new(addr)
                    .connections(shape.connections)
                    .request_timeout(Duration::from_secs(30))
                    .client_name("sessiond-bench"),
            )
            .await
            .with_context(|| format!("connecting to sessiond at {addr}"))?;
            return Ok(Self::Sessiond {
                client,
                ids: Arc::new(Vec::new()),
            });
        }
        if url.starts_with("redis://") {
            let client = redis::Client::open(url)?;
            let mut conns = Vec::new();
            for _ in 0..shape.connections.max(1) {
                conns.push(
                    client
                        .get_multiplexed_async_connection()
                        .await
                        .with_context(|| format!("connecting to {url}"))?,
                );
            }
            return Ok(Self::Redis {
                conns: Arc::new(conns),
                next: Arc::new(AtomicUsize::new(0)),
                indexed: shape.indexed,
                wait: shape.redis_wait,
                keyspace: 0,
            });
        }
        if url.starts_with("http://") {
            let http = Http::connect(url, shape.connections, shape.value_size, shape.ttl).await?;
            return Ok(Self::Http {
                http: Arc::new(http),
                keyspace: 0,
            });
        }
        bail!(
            "--target must be sessiond://HOST:PORT, redis://HOST:PORT or http://HOST:PORT, not {url:?}"
        )
    }

    /// Creates `n` sessions (from `tasks` concurrent tasks) for the read and
    /// update workloads.
    ///
    /// # Errors
    /// A failed request.
    pub async fn preload(&mut self, n: usize, tasks: usize, shape: &Shape) -> anyhow::Result<()> {
        let all = self.create_range(0, n, tasks, shape).await?;
        match self {
            Self::Sessiond { ids, .. } => *ids = Arc::new(all.into_iter().flatten().collect()),
            Self::Redis { keyspace, .. } | Self::Http { keyspace, .. } => *keyspace = n,
        }
        Ok(())
    }

    /// Creates sessions numbered `from..from + n` that no workload reads (a
    /// fuller store).
    ///
    /// # Errors
    /// A failed request.
    pub async fn fill(
        &self,
        from: usize,
        n: usize,
        tasks: usize,
        shape: &Shape,
    ) -> anyhow::Result<()> {
        self.create_range(from, n, tasks, shape).await.map(drop)
    }

    /// Creates sessions numbered `from..from + n` from `tasks` tasks; their
    /// ids, in order.
    async fn create_range(
        &self,
        from: usize,
        n: usize,
        tasks: usize,
        shape: &Shape,
    ) -> anyhow::Result<Vec<Option<SessionId>>> {
        let tasks = tasks.clamp(1, n.max(1));
        let mut handles = Vec::new();
        for t in 0..tasks {
            let me = self.clone();
            let shape = shape.clone();
            let (lo, hi) = (from + n * t / tasks, from + n * (t + 1) / tasks);
            handles.push(tokio::spawn(async move {
                let mut ids = Vec::with_capacity(hi - lo);
                for i in lo..hi {
                    ids.push(me.create(i, &shape).await?);
                }
                anyhow::Ok(ids)
            }));
        }
        let mut all = Vec::with_capacity(n);
        for h in handles {
            all.extend(h.await??);
        }
        Ok(all)
    }

    fn conn(&self) -> Option<MultiplexedConnection> {
        match self {
            Self::Redis { conns, next, .. } => {
                let i = next.fetch_add(1, Ordering::Relaxed) % conns.len();
                Some(conns[i].clone())
            }
            Self::Sessiond { .. } | Self::Http { .. } => None,
        }
    }

    async fn create(&self, i: usize, shape: &Shape) -> anyhow::Result<Option<SessionId>> {
        let value = shape.value(i, 'x');
        match self {
            Self::Sessiond { client, .. } => {
                let s = client
                    .create("bench", create_options(i, shape, value))
                    .await?;
                Ok(Some(s.id))
            }
            Self::Redis { indexed, .. } => {
                let mut con = self.conn().context("no redis connection")?;
                let key = redis_key(i);
                let mut pipe = redis::pipe();
                pipe.cmd("SET")
                    .arg(&key)
                    .arg(value)
                    .arg("EX")
                    .arg(shape.ttl.as_secs().max(1))
                    .ignore();
                if *indexed {
                    pipe.cmd("SADD")
                        .arg(format!("owner:user{}", i % 10_000))
                        .arg(&key)
                        .ignore();
                }
                pipe.query_async::<()>(&mut con).await?;
                Ok(None)
            }
            Self::Http { http, .. } => {
                let user = http.user(i);
                if let Err(why) = http.create(&user).await? {
                    bail!("POST /create for preloaded user {user}: {why}");
                }
                Ok(None)
            }
        }
    }

    /// Runs `depth` requests of kind `req` at once (a pipeline), on keys from
    /// `seed`. Returns how many failed.
    ///
    /// # Errors
    /// Only for a broken connection to Redis; request failures are counted.
    pub async fn batch(
        &self,
        req: Request,
        seed: usize,
        depth: usize,
        shape: &Shape,
    ) -> anyhow::Result<u64> {
        match self {
            Self::Sessiond { client, ids } => {
                // A single op is one call; more go as one pipeline, as the
                // Redis target sends one. A create+delete is a create of a
                // chosen id and its delete, in order, in one round trip.
                let id = |i: usize| {
                    ids.get(i % ids.len().max(1))
                        .copied()
                        .unwrap_or(SessionId([0; 16]))
                };
                let get = |i: usize, touch: bool| {
                    Op::Get(protocol::Get {
                        namespace: "bench".into(),
                        id: id(i),
                        touch,
                    })
                };
                let per_request = if req == Request::CreateDelete { 2 } else { 1 };
                let mut ops = Vec::with_capacity(depth * per_request);
                for k in 0..depth {
                    let i = seed.wrapping_add(k.wrapping_mul(7919));
                    match req {
                        Request::Create => {
                            ops.push(create_options(i, shape, shape.value(i, 'x')).into_op("bench"))
                        }
                        Request::Get => ops.push(get(i, false)),
                        Request::GetTouch => ops.push(get(i, true)),
                        Request::Update => ops.push(
                            UpdateOptions::new()
                                .set("data", Value::Str(shape.value(i, 'y')))
                                .into_op("bench", id(i)),
                        ),
                        Request::CreateDelete => {
                            let new = SessionId::new_v4();
                            ops.push(
                                create_options(i, shape, shape.value(i, 'x'))
                                    .id(new)
                                    .into_op("bench"),
                            );
                            ops.push(Op::Delete(protocol::Delete {
                                namespace: "bench".into(),
                                id: new,
                            }));
                        }
                    }
                }
                if ops.len() == 1 {
                    let op = ops.pop().context("one op")?;
                    return Ok(u64::from(client.call(op).await.is_err()));
                }
                Ok(match client.pipeline(ops).await {
                    Ok(replies) => replies
                        .chunks(per_request)
                        .map(|r| u64::from(r.iter().any(Result::is_err)))
                        .sum(),
                    Err(_) => depth as u64,
                })
            }
            Self::Redis {
                keyspace,
                indexed,
                wait,
                ..
            } => {
                let mut con = self.conn().context("no redis connection")?;
                let ttl = shape.ttl.as_secs().max(1);
                let mut cmds = Vec::with_capacity(depth);
                for k in 0..depth {
                    let i = seed.wrapping_add(k.wrapping_mul(7919));
                    let key = redis_key(i % (*keyspace).max(1));
                    match req {
                        Request::Create | Request::CreateDelete => {
                            let fresh = redis_key(usize::MAX / 2 - (i % 1_000_000_000));
                            let owner = format!("owner:user{}", i % 10_000);
                            push_cmd(&mut cmds, "SET")
                                .arg(&fresh)
                                .arg(shape.value(i, 'x'))
                                .arg("EX")
                                .arg(ttl);
                            if *indexed {
                                push_cmd(&mut cmds, "SADD").arg(&owner).arg(&fresh);
                            }
                            if req == Request::CreateDelete {
                                push_cmd(&mut cmds, "DEL").arg(&fresh);
                                if *indexed {
                                    push_cmd(&mut cmds, "SREM").arg(&owner).arg(&fresh);
                                }
                            }
                        }
                        Request::Get => {
                            push_cmd(&mut cmds, "GET").arg(&key);
                        }
                        Request::GetTouch => {
                            push_cmd(&mut cmds, "GETEX").arg(&key).arg("EX").arg(ttl);
                        }
                        Request::Update => {
                            push_cmd(&mut cmds, "SET")
                                .arg(&key)
                                .arg(shape.value(i, 'y'))
                                .arg("XX")
                                .arg("KEEPTTL");
                        }
                    }
                    if let (Some(n), true) = (
                        wait,
                        matches!(
                            req,
                            Request::Create | Request::CreateDelete | Request::Update
                        ),
                    ) {
                        push_cmd(&mut cmds, "WAIT").arg(*n).arg(0);
                    }
                }
                // A single command is sent as one, as sessiond's single op is
                // one call; more go as one pipeline.
                let sent = match <[redis::Cmd; 1]>::try_from(cmds) {
                    Ok([one]) => one.query_async::<redis::Value>(&mut con).await.map(drop),
                    Err(cmds) => {
                        let mut pipe = redis::pipe();
                        for c in cmds {
                            pipe.add_command(c);
                        }
                        pipe.query_async::<Vec<redis::Value>>(&mut con)
                            .await
                            .map(drop)
                    }
                };
                match sent {
                    Ok(()) => Ok(0),
                    Err(e) if e.is_io_error() || e.is_connection_dropped() => Err(e.into()),
                    Err(_) => Ok(depth as u64),
                }
            }
            Self::Http { http, keyspace } => {
                let calls = (0..depth).map(|k| {
                    let i = seed.wrapping_add(k.wrapping_mul(7919));
                    let preloaded = http.user(i % (*keyspace).max(1));
                    async move {
                        match req {
                            // The cache API has no delete: create+delete is a create.
                            Request::Create | Request::CreateDelete => {
                                http.create(&http.fresh_user()).await
                            }
                            // No sliding read either: get-touch is a get.
                            Request::Get | Request::GetTouch => http.get(&preloaded).await,
                            Request::Update => http.create(&preloaded).await,
                        }
                    }
                });
                let mut failed = 0;
                for answer in join_all(calls).await {
                    let answer: Answer = answer?;
                    failed += u64::from(answer.is_err());
                }
                Ok(failed)
            }
        }
    }
}

/// What every sessiond create of the harness sends: an owner (one of 10,000;
/// none with `--no-owner`), the idle ttl and one attribute.
fn create_options(i: usize, shape: &Shape, value: String) -> CreateOptions {
    let opts = CreateOptions::new()
        .idle_ttl(shape.ttl)
        .attr("data", Value::Str(value));
    if shape.owner {
        opts.owner(format!("user{}", i % 10_000))
    } else {
        opts
    }
}

/// Appends the Redis command `name` to `cmds`, for its arguments.
fn push_cmd<'a>(cmds: &'a mut Vec<redis::Cmd>, name: &str) -> &'a mut redis::Cmd {
    cmds.push(redis::cmd(name));
    let last = cmds.len() - 1;
    &mut cmds[last]
}
