//! Events subscribers beside the load (`--subscribers N`): each opens its own
//! connection, subscribes to every namespace from now on and reads the feed
//! as fast as it comes, counting events, so a run shows what the feed costs
//! the writers with that many readers attached.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use sessiond_protocol::frame::{decode_response, encode_request, split_frame, HEADER_LEN};
use sessiond_protocol::view::peek_events_count;
use sessiond_protocol::{EventsFrom, Hello, Op, Reply, Request, Subscribe, PROTOCOL_VERSION};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Subscribers under way and the events they received.
#[derive(Debug, Default)]
pub struct Subscribers {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Events received by all of them.
    pub received: Arc<AtomicU64>,
}

impl Subscribers {
    /// Starts `n` subscribers on the sessiond at `addr` (`HOST:PORT`); returns
    /// once each is subscribed.
    ///
    /// # Errors
    /// A connection or protocol failure, or a refused subscription.
    pub async fn start(addr: &str, n: usize) -> anyhow::Result<Self> {
        let received = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..n {
            let mut stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let mut out = BytesMut::new();
            let hello = Op::Hello(Hello {
                protocol_version: PROTOCOL_VERSION,
                auth_token: None,
                client_name: Some("sessiond-bench subscriber".into()),
            });
            encode_request(&Request { id: 1, op: hello }, &mut out)?;
            let sub = Op::Subscribe(Subscribe {
                namespaces: Vec::new(),
                updates: true,
                touches: true,
                from: EventsFrom::Now,
            });
            encode_request(&Request { id: 2, op: sub }, &mut out)?;
            stream.write_all(&out).await?;
            let mut buf = BytesMut::with_capacity(64 * 1024);
            // The hello's and the subscription's answers.
            let mut answers = 0;
            while answers < 2 {
                if stream.read_buf(&mut buf).await? == 0 {
                    anyhow::bail!("the daemon closed the subscriber's connection");
                }
                while let Some((payload, used)) = split_frame(&buf, u32::MAX >> 1)? {
                    let reply = decode_response(payload)?.reply;
                    let _ = buf.split_to(used);
                    answers += 1;
                    match reply {
                        Reply::Hello(_) | Reply::Subscribed(_) => {}
                        other => anyhow::bail!("subscription refused: {other:?}"),
                    }
                }
            }
            let count = Arc::clone(&received);
            tasks.push(tokio::spawn(async move {
                loop {
                    // Counted from each frame's head: a consumer that does
                    // next to nothing, so the run measures the daemon.
                    while let Ok(Some((payload, used))) = split_frame(&buf, u32::MAX >> 1) {
                        if let Some(n) = peek_events_count(payload) {
                            count.fetch_add(n, Ordering::Relaxed);
                        }
                        let _ = buf.split_to(used.max(HEADER_LEN));
                    }
                    match stream.read_buf(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            }));
        }
        Ok(Self { tasks, received })
    }

    /// Stops them; the events they received.
    pub fn stop(self) -> u64 {
        for t in &self.tasks {
            t.abort();
        }
        self.received.load(Ordering::Relaxed)
    }
}
