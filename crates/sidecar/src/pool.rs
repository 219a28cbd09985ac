//! Connections to the application on 127.0.0.1, kept open and reused.
//!
//! A keep-alive client is served over one upstream connection for its whole life: each client
//! connection holds the upstream connection its last request used (a [`Bound`]), so the request
//! path takes no shared lock and runs no pool checkout. Against hyper-util's pooled client this
//! took about a fifth off the sidecar's CPU per proxied request (docs/PERFORMANCE.md).
//!
//! Upstream connections whose client has gone wait in a small shared idle list for the next
//! client, as in Kong's `upstream_keepalive_pool_size`; an HTTP/2 client with several requests
//! in flight draws its extra connections from there too.
//!
//! A client that stays connected but sends nothing keeps its upstream connection only for
//! Kong's `upstream_keepalive_idle_timeout`: then the connection is closed, so idle clients
//! never hold more of the application's connections than the idle list's cap.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;

use tollgate_h1::Connection;

/// Idle connections kept per upstream port: Kong's `upstream_keepalive_pool_size`.
const MAX_IDLE_PER_PORT: usize = 60;
/// Idle connections are not reused after this long. IRIS's web gateway keeps connections open
/// far longer, so the sidecar stops using one first and never sends on a socket the
/// application is closing.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// What the idle list needs to know about a connection.
pub trait Reusable {
    /// The connection has been closed by either side and can carry no more requests.
    fn is_closed(&self) -> bool;
}

impl Reusable for Connection {
    fn is_closed(&self) -> bool {
        Connection::is_closed(self)
    }
}

/// The upstream connections no client connection holds, by port. Pure bookkeeping, with the
/// clock passed in, so its rules are tested as functions.
#[derive(Debug)]
pub struct IdleList<C> {
    by_port: HashMap<u16, VecDeque<(Instant, C)>>,
    max_per_port: usize,
    timeout: Duration,
}

impl<C: Reusable> IdleList<C> {
    pub fn new(max_per_port: usize, timeout: Duration) -> Self {
        Self {
            by_port: HashMap::new(),
            max_per_port,
            timeout,
        }
    }

    /// Keeps `conn` for reuse; when the port's list is full, its oldest connection is closed.
    pub fn put(&mut self, port: u16, conn: C, now: Instant) {
        if conn.is_closed() || self.max_per_port == 0 {
            return;
        }
        let list = self.by_port.entry(port).or_default();
        expire(list, now, self.timeout);
        if list.len() >= self.max_per_port {
            list.pop_front();
        }
        list.push_back((now, conn));
    }

    /// The most recently used open connection to `port`: the one whose socket is warmest and
    /// furthest from the application's idle timeout.
    pub fn take(&mut self, port: u16, now: Instant) -> Option<C> {
        let list = self.by_port.get_mut(&port)?;
        expire(list, now, self.timeout);
        while let Some((_, conn)) = list.pop_back() {
            if !conn.is_closed() {
                return Some(conn);
            }
        }
        None
    }

    /// Closes every connection that has expired or that the application has closed, so a
    /// quiet sidecar holds no stale sockets and its idle count stays true.
    pub fn sweep(&mut self, now: Instant) {
        for list in self.by_port.values_mut() {
            expire(list, now, self.timeout);
            list.retain(|(_, conn)| !conn.is_closed());
        }
        self.by_port.retain(|_, list| !list.is_empty());
    }

    pub fn len(&self) -> usize {
        self.by_port.values().map(VecDeque::len).sum()
    }
}

/// Drops the connections idle for longer than `timeout`: the oldest are at the front.
fn expire<C>(list: &mut VecDeque<(Instant, C)>, now: Instant, timeout: Duration) {
    while list
        .front()
        .is_some_and(|(since, _)| now.duration_since(*since) >= timeout)
    {
        list.pop_front();
    }
}

/// Every upstream connection of the sidecar that no client connection holds.
#[derive(Debug)]
pub struct Pool {
    idle: Mutex<IdleList<Connection>>,
    metrics: PoolMetrics,
    /// Every client connection's [`Bound`], for the sweep to take back what they hold idle.
    bound: Mutex<Vec<Weak<Bound>>>,
    /// How long a client connection keeps an upstream connection it does not use.
    held_idle_timeout: Duration,
}

/// `tollgate_upstream_connections_total` and `tollgate_upstream_idle_connections`.
#[derive(Debug, Clone, Default)]
pub struct PoolMetrics {
    pub opened: Counter,
    pub idle: Gauge,
}

impl Pool {
    pub fn new(metrics: PoolMetrics, held_idle_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            idle: Mutex::new(IdleList::new(MAX_IDLE_PER_PORT, IDLE_TIMEOUT)),
            metrics,
            bound: Mutex::new(Vec::new()),
            held_idle_timeout,
        })
    }

    /// Runs `f` on the idle list and reports its new length.
    fn with_idle<T>(&self, f: impl FnOnce(&mut IdleList<Connection>) -> T) -> T {
        // The list is consistent after every statement; a panic elsewhere leaves it usable.
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let result = f(&mut idle);
        self.metrics.idle.set(idle.len() as i64);
        result
    }

    /// Sweeps the idle list, and the connections client connections hold unused, every third
    /// of the shorter idle timeout until `stop`.
    pub async fn sweep_idle(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut every = tokio::time::interval(IDLE_TIMEOUT.min(self.held_idle_timeout) / 3);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {
                    let now = Instant::now();
                    self.with_idle(|idle| idle.sweep(now));
                    self.close_held_idle(now);
                }
                _ = stop.wait_for(|stop| *stop) => return,
            }
        }
    }

    fn register(&self, bound: Weak<Bound>) {
        self.bound
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(bound);
    }

    /// Closes the upstream connections that client connections have held unused for the
    /// held idle timeout, and forgets the client connections that have closed.
    fn close_held_idle(&self, now: Instant) {
        let live: Vec<Arc<Bound>> = {
            let mut bound = self.bound.lock().unwrap_or_else(PoisonError::into_inner);
            bound.retain(|b| b.strong_count() > 0);
            bound.iter().filter_map(Weak::upgrade).collect()
        };
        for bound in live {
            bound.close_if_idle(now, self.held_idle_timeout);
        }
    }

    fn put(&self, port: u16, conn: Connection) {
        self.with_idle(|idle| idle.put(port, conn, Instant::now()));
    }

    fn take(&self, port: u16) -> Option<Connection> {
        self.with_idle(|idle| idle.take(port, Instant::now()))
    }

    /// Opens a connection to the application, giving up after `timeout` with `TimedOut`.
    async fn connect(&self, port: u16, timeout: Duration) -> std::io::Result<Connection> {
        let conn = tokio::time::timeout(timeout, Connection::open(port))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        self.metrics.opened.inc();
        Ok(conn)
    }
}

/// The upstream connection one client connection holds between its requests. When the client
/// connection closes, the upstream connection goes to the shared idle list.
pub struct Bound {
    pool: Arc<Pool>,
    held: Mutex<Option<Held>>,
}

/// The connection a client connection holds, to which port, and since when unused.
struct Held {
    port: u16,
    conn: Connection,
    since: Instant,
}

/// Where a connection for a request came from; only a reused connection can have been closed by
/// the application just before the request was written, so only then is a retry safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Reused,
    New,
}

impl Bound {
    pub fn new(pool: Arc<Pool>) -> Arc<Self> {
        let bound = Arc::new(Self {
            pool,
            held: Mutex::new(None),
        });
        bound.pool.register(Arc::downgrade(&bound));
        bound
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Option<Held>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Closes the held connection when it has not carried a request for `timeout`: a client
    /// that sends nothing must not keep one of the application's connections.
    fn close_if_idle(&self, now: Instant, timeout: Duration) {
        let mut held = self.held();
        if held
            .as_ref()
            .is_some_and(|held| now.duration_since(held.since) >= timeout)
        {
            *held = None;
        }
    }

    /// A connection to `port` ready to carry a request: this client's own, an idle one, or a
    /// new one.
    pub async fn checkout(
        &self,
        port: u16,
        connect_timeout: Duration,
    ) -> std::io::Result<(Connection, Origin)> {
        let own = {
            let mut held = self.held();
            match held.take() {
                Some(Held {
                    port: held_port,
                    conn,
                    ..
                }) if held_port == port => Some(conn),
                other => {
                    *held = other;
                    None
                }
            }
        };
        if let Some(conn) = own.filter(|conn| !conn.is_closed()) {
            return Ok((conn, Origin::Reused));
        }
        // The idle list only hands out connections it has not seen closed.
        if let Some(conn) = self.pool.take(port) {
            return Ok((conn, Origin::Reused));
        }
        Ok((self.connect(port, connect_timeout).await?, Origin::New))
    }

    /// A new connection to `port`. Boxed: the connect future is large, and inline it would
    /// grow the future of every proxied request, which hyper moves by value.
    pub async fn connect(&self, port: u16, timeout: Duration) -> std::io::Result<Connection> {
        Box::pin(self.pool.connect(port, timeout)).await
    }

    /// Takes back a connection whose last response has been read whole.
    pub fn give_back(&self, port: u16, conn: Connection) {
        let mut held = self.held();
        match &*held {
            None => {
                *held = Some(Held {
                    port,
                    conn,
                    since: Instant::now(),
                })
            }
            // An HTTP/2 client had two requests in flight: keep one connection, share the other.
            Some(_) => {
                drop(held);
                self.pool.put(port, conn);
            }
        }
    }
}

impl Drop for Bound {
    fn drop(&mut self) {
        if let Some(Held { port, conn, .. }) = self.held().take() {
            self.pool.put(port, conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    /// A connection that the test can close, named so the tests can tell which came back.
    #[derive(Debug, Clone)]
    struct Fake {
        name: &'static str,
        closed: Rc<Cell<bool>>,
    }

    fn fake(name: &'static str) -> Fake {
        Fake {
            name,
            closed: Rc::new(Cell::new(false)),
        }
    }

    impl Reusable for Fake {
        fn is_closed(&self) -> bool {
            self.closed.get()
        }
    }

    fn name(conn: Option<Fake>) -> Option<&'static str> {
        conn.map(|c| c.name)
    }

    #[test]
    fn the_most_recently_used_connection_to_the_port_comes_back_first() {
        let t0 = Instant::now();
        let mut idle = IdleList::new(4, Duration::from_secs(30));
        idle.put(8080, fake("a"), t0);
        idle.put(8080, fake("b"), t0 + Duration::from_secs(1));
        idle.put(9090, fake("other port"), t0 + Duration::from_secs(2));
        let now = t0 + Duration::from_secs(3);
        assert_eq!(name(idle.take(8080, now)), Some("b"));
        assert_eq!(name(idle.take(8080, now)), Some("a"));
        assert_eq!(name(idle.take(8080, now)), None);
        assert_eq!(name(idle.take(7070, now)), None);
        assert_eq!(idle.len(), 1);
    }

    #[test]
    fn connections_idle_for_the_timeout_are_never_reused() {
        let t0 = Instant::now();
        let mut idle = IdleList::new(4, Duration::from_secs(30));
        idle.put(8080, fake("old"), t0);
        idle.put(8080, fake("recent"), t0 + Duration::from_secs(20));
        // At 30 s the old one has expired, the recent one not yet.
        let now = t0 + Duration::from_secs(30);
        assert_eq!(name(idle.take(8080, now)), Some("recent"));
        assert_eq!(idle.len(), 0, "the expired connection was closed, not kept");
    }

    #[test]
    fn closed_connections_are_skipped_and_dropped() {
        let t0 = Instant::now();
        let mut idle = IdleList::new(4, Duration::from_secs(30));
        let closed_later = fake("closed after it was put");
        idle.put(8080, fake("open"), t0);
        idle.put(8080, closed_later.clone(), t0);
        closed_later.closed.set(true);
        let already_closed = fake("closed before");
        already_closed.closed.set(true);
        idle.put(8080, already_closed, t0);
        assert_eq!(name(idle.take(8080, t0)), Some("open"));
        assert_eq!(idle.len(), 0);
    }

    #[test]
    fn a_full_list_closes_its_oldest_connection() {
        let t0 = Instant::now();
        let mut idle = IdleList::new(2, Duration::from_secs(30));
        idle.put(8080, fake("first"), t0);
        idle.put(8080, fake("second"), t0);
        idle.put(8080, fake("third"), t0);
        assert_eq!(idle.len(), 2);
        assert_eq!(name(idle.take(8080, t0)), Some("third"));
        assert_eq!(name(idle.take(8080, t0)), Some("second"));
        assert_eq!(name(idle.take(8080, t0)), None);
    }

    #[test]
    fn a_sweep_closes_expired_and_closed_connections_on_every_port() {
        let t0 = Instant::now();
        let mut idle = IdleList::new(4, Duration::from_secs(30));
        let closed_by_the_application = fake("closed");
        idle.put(8080, fake("expired"), t0);
        idle.put(
            8080,
            closed_by_the_application.clone(),
            t0 + Duration::from_secs(20),
        );
        idle.put(8080, fake("fresh"), t0 + Duration::from_secs(20));
        idle.put(9090, fake("expired on another port"), t0);
        closed_by_the_application.closed.set(true);
        idle.sweep(t0 + Duration::from_secs(30));
        assert_eq!(idle.len(), 1);
        assert!(!idle.by_port.contains_key(&9090), "empty lists are dropped");
        assert_eq!(
            name(idle.take(8080, t0 + Duration::from_secs(30))),
            Some("fresh")
        );
    }

    #[test]
    fn a_list_of_size_zero_keeps_nothing() {
        let mut idle = IdleList::new(0, Duration::from_secs(30));
        idle.put(8080, fake("a"), Instant::now());
        assert_eq!(idle.len(), 0);
    }
}
