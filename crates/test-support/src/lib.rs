//! Test harness: a real `redis-server` on a free loopback port, which a test can kill,
//! restart on the same port, and query over raw RESP to check what Redis actually holds; and
//! the pieces of a Sentinel deployment (replicas, `redis-server --sentinel`).
//!
//! Std-only on purpose (no tokio), so sync and async tests alike can use it. Everything here
//! panics on failure: it runs only in tests, where a panic with a clear message is the
//! right way to report a broken environment.
#![forbid(unsafe_code)]

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a fresh `redis-server` may take to answer PING. Generous: CI machines are slow
/// and busy, and a readiness wait that is too short only makes flaky tests.
const READY_DEADLINE: Duration = Duration::from_secs(20);

/// How often a free port is looked for again when another process took the one we picked.
const START_ATTEMPTS: usize = 5;

/// Socket timeouts of [`RedisServer::command`]: a test must fail, not hang, on a dead server.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// What redis-server logs once it listens (the same words from Redis 5 to 7).
const READY_LINE: &str = "Ready to accept connections";
/// What a sentinel logs once it runs (it never logs [`READY_LINE`]).
const SENTINEL_READY_LINE: &str = "Sentinel ID is";

const NOT_FOUND: &str =
    "redis-server not found: install it (`apt-get install -y redis-server`; `make test` does this)";

/// A `redis-server` child process, killed when dropped.
pub struct RedisServer {
    port: u16,
    extra_args: Vec<String>,
    /// Sent as AUTH before every [`RedisServer::command`] when the server was started with
    /// `--requirepass`.
    password: Option<String>,
    /// Runs as `redis-server --sentinel`.
    sentinel: bool,
    /// `None` while killed.
    child: Option<Child>,
    /// Working directory and log; removed after `Drop` has killed the child.
    dir: tempfile::TempDir,
}

/// A connection subscribed to one channel; see [`RedisServer::subscribe`].
pub struct Subscriber {
    /// Kept open for as long as the subscription should last.
    _stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Subscriber {
    /// The next message published on the channel: `(channel, payload)`. Panics when none
    /// comes within a generous timeout.
    pub fn next_message(&mut self) -> (String, Vec<u8>) {
        let reply = read_reply(&mut self.reader)
            .unwrap_or_else(|e| panic!("no message on the subscription: {e}"));
        match reply {
            RespValue::Array(Some(items)) => match items.as_slice() {
                [kind, channel, RespValue::Bulk(Some(payload))]
                    if kind.as_string().as_deref() == Some("message") =>
                {
                    (channel.as_string().unwrap_or_default(), payload.clone())
                }
                _ => panic!("not a message: {items:?}"),
            },
            other => panic!("not a message: {other:?}"),
        }
    }
}

impl fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscriber").finish_non_exhaustive()
    }
}

/// A sentinel that names whichever master it was told to, as a stale or hostile sentinel
/// does: it answers every `SENTINEL` command with that address, `PING` with `PONG`, and
/// anything else with `OK`. Serves until the test process ends.
pub struct FakeSentinel {
    port: u16,
    /// The reply to `SENTINEL …`: the master's address, encoded.
    answer: std::sync::Arc<std::sync::Mutex<String>>,
}

impl FakeSentinel {
    /// Listens on a free loopback port, naming `host:port` as the master.
    pub fn naming(host: &str, port: u16) -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap_or_else(|e| panic!("cannot listen for a fake sentinel: {e}"));
        let own_port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
        let answer = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let shared = std::sync::Arc::clone(&answer);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let answer = std::sync::Arc::clone(&shared);
                std::thread::spawn(move || serve_as_sentinel(stream, &answer));
            }
        });
        let sentinel = Self {
            port: own_port,
            answer,
        };
        sentinel.name(host, port);
        sentinel
    }

    /// Names `host:port` from now on, as sentinels do after a failover.
    pub fn name(&self, host: &str, port: u16) {
        let port = port.to_string();
        *self.answer.lock().unwrap_or_else(|e| e.into_inner()) = format!(
            "*2\r\n${}\r\n{host}\r\n${}\r\n{port}\r\n",
            host.len(),
            port.len()
        );
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

fn serve_as_sentinel(stream: TcpStream, answer: &std::sync::Mutex<String>) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    while let Ok(command) = read_reply(&mut reader) {
        let name = command
            .strings()
            .first()
            .map(|name| name.to_ascii_uppercase())
            .unwrap_or_default();
        let reply = match name.as_str() {
            "SENTINEL" => answer.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            "PING" => "+PONG\r\n".to_owned(),
            _ => "+OK\r\n".to_owned(),
        };
        if writer.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// A RESP2 reply, as [`RedisServer::command`] reads it.
#[derive(Clone, PartialEq, Eq)]
pub enum RespValue {
    /// `+OK`
    Simple(String),
    /// `-ERR …`
    Error(String),
    /// `:1`
    Integer(i64),
    /// `$…`; `None` is the null bulk string `$-1`.
    Bulk(Option<Vec<u8>>),
    /// `*…`; `None` is the null array `*-1`.
    Array(Option<Vec<RespValue>>),
}

// === impl RedisServer ===

impl RedisServer {
    /// Starts `redis-server` on a free loopback port, without persistence, and waits until it
    /// answers PING.
    pub fn start() -> Self {
        Self::start_with_args(&[])
    }

    /// Like [`RedisServer::start`], with extra command-line arguments appended, e.g.
    /// `&["--requirepass", "s3cret"]`. Later arguments override earlier ones, so these can
    /// also replace the defaults.
    pub fn start_with_args(args: &[&str]) -> Self {
        Self::start_as(args, false)
    }

    /// A replica of `master` (`--replicaof`), with `args` appended. It answers before it has
    /// synced: see [`RedisServer::wait_until`].
    pub fn start_replica_of(master: &RedisServer, args: &[&str]) -> Self {
        let port = master.port.to_string();
        let mut all = vec!["--replicaof", "127.0.0.1", &port];
        all.extend_from_slice(args);
        Self::start_as(&all, false)
    }

    /// `redis-server --sentinel` monitoring `master` as `name` with `quorum`, declaring it
    /// down after `down_after` without an answer, and giving a failover `failover_timeout`.
    /// It finds the replicas and the other sentinels by itself, within a few seconds.
    pub fn start_sentinel(
        name: &str,
        master: &RedisServer,
        quorum: u32,
        down_after: Duration,
        failover_timeout: Duration,
    ) -> Self {
        Self::start_sentinel_with(name, master.port, quorum, down_after, failover_timeout, &[])
    }

    /// [`RedisServer::start_sentinel`] for the master at `master_port` (a TLS port, say), with
    /// `args` appended: `--requirepass`, `--sentinel auth-pass …`, the `--tls-*` settings.
    pub fn start_sentinel_with(
        name: &str,
        master_port: u16,
        quorum: u32,
        down_after: Duration,
        failover_timeout: Duration,
        args: &[&str],
    ) -> Self {
        let port = master_port.to_string();
        let quorum = quorum.to_string();
        let down_after = down_after.as_millis().to_string();
        let failover_timeout = failover_timeout.as_millis().to_string();
        Self::start_as(
            &[
                "--sentinel",
                "monitor",
                name,
                "127.0.0.1",
                &port,
                &quorum,
                "--sentinel",
                "down-after-milliseconds",
                name,
                &down_after,
                "--sentinel",
                "failover-timeout",
                name,
                &failover_timeout,
            ]
            .into_iter()
            .chain(args.iter().copied())
            .collect::<Vec<_>>(),
            true,
        )
    }

    /// Asks `args` until `done` holds for the reply; panics with the last reply after
    /// [`READY_DEADLINE`]. For states Redis reaches by itself: a replica in sync, a failover.
    pub fn wait_until(&self, args: &[&str], done: impl Fn(&RespValue) -> bool) -> RespValue {
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            let reply = self.command(args);
            if done(&reply) {
                return reply;
            }
            assert!(
                Instant::now() < deadline,
                "{args:?} on port {}: still {reply} after {READY_DEADLINE:?}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn start_as(args: &[&str], sentinel: bool) -> Self {
        let binary = find_redis_server().unwrap_or_else(|| panic!("{NOT_FOUND}"));
        let extra_args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let password = extra_args
            .iter()
            .position(|a| a == "--requirepass")
            .and_then(|i| extra_args.get(i + 1))
            .cloned();
        let dir = tempfile::Builder::new()
            .prefix("tollgate-redis-")
            .tempdir()
            .unwrap_or_else(|e| {
                panic!("cannot create a temporary directory for redis-server: {e}")
            });

        let mut last_failure = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            match spawn_and_wait(&binary, port, dir.path(), &extra_args, sentinel) {
                Ok(child) => {
                    return Self {
                        port,
                        extra_args,
                        password,
                        sentinel,
                        child: Some(child),
                        dir,
                    };
                }
                // Most likely another process bound the port between our probe and
                // redis-server's bind: try another port.
                Err(failure) => last_failure = failure,
            }
        }
        panic!("redis-server did not start after {START_ATTEMPTS} attempts: {last_failure}");
    }

    /// `redis://127.0.0.1:<port>` (without the password, when there is one).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's working directory, which also holds its log (`redis.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What the server has logged so far; handy in assertion messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Kills the server with SIGKILL (no shutdown, no goodbye to clients) and reaps it.
    /// Does nothing when it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // An error means the process already exited; `wait` reaps it either way.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (killing it first if it still runs) and waits
    /// until it answers. Its data is gone: persistence is off.
    pub fn restart(&mut self) {
        self.kill();
        let binary = find_redis_server().unwrap_or_else(|| panic!("{NOT_FOUND}"));
        // The port was ours a moment ago, but the kernel may briefly refuse to rebind it on
        // some systems; redis-server then exits, and we try again until the deadline.
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            match spawn_and_wait(
                &binary,
                self.port,
                self.dir.path(),
                &self.extra_args,
                self.sentinel,
            ) {
                Ok(child) => {
                    self.child = Some(child);
                    return;
                }
                Err(failure) if Instant::now() >= deadline => {
                    panic!(
                        "redis-server did not restart on port {}: {failure}",
                        self.port
                    )
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Sends one command over a fresh TCP connection (after AUTH when the server has a
    /// password) and returns the reply. Panics when the server cannot be reached.
    pub fn command(&self, args: &[&str]) -> RespValue {
        let mut stream = TcpStream::connect(self.addr())
            .unwrap_or_else(|e| panic!("cannot connect to redis-server on {}: {e}", self.port));
        stream.set_read_timeout(Some(IO_TIMEOUT)).ok();
        stream.set_write_timeout(Some(IO_TIMEOUT)).ok();
        let mut reader = BufReader::new(stream.try_clone().unwrap_or_else(|e| {
            panic!("cannot clone a TCP stream: {e}");
        }));
        if let Some(password) = &self.password {
            send(&mut stream, &["AUTH", password]);
            match read_reply(&mut reader) {
                Ok(RespValue::Simple(_)) => {}
                other => panic!("AUTH failed: {other:?}"),
            }
        }
        send(&mut stream, args);
        read_reply(&mut reader)
            .unwrap_or_else(|e| panic!("bad reply from redis-server to {:?}: {e}", args.first()))
    }

    /// Subscribes to `channel` over a connection of its own (after AUTH when the server has
    /// a password), to see exactly what is published there. Returns once Redis confirmed.
    pub fn subscribe(&self, channel: &str) -> Subscriber {
        let mut stream = TcpStream::connect(self.addr())
            .unwrap_or_else(|e| panic!("cannot connect to redis-server on {}: {e}", self.port));
        stream.set_read_timeout(Some(IO_TIMEOUT)).ok();
        stream.set_write_timeout(Some(IO_TIMEOUT)).ok();
        let mut reader = BufReader::new(stream.try_clone().unwrap_or_else(|e| {
            panic!("cannot clone a TCP stream: {e}");
        }));
        if let Some(password) = &self.password {
            send(&mut stream, &["AUTH", password]);
            match read_reply(&mut reader) {
                Ok(RespValue::Simple(_)) => {}
                other => panic!("AUTH failed: {other:?}"),
            }
        }
        send(&mut stream, &["SUBSCRIBE", channel]);
        match read_reply(&mut reader) {
            Ok(reply) if reply.strings().first().map(String::as_str) == Some("subscribe") => {}
            other => panic!("SUBSCRIBE {channel} failed: {other:?}"),
        }
        Subscriber {
            _stream: stream,
            reader,
        }
    }

    /// Every key of the database (`KEYS *`), sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut keys = self.command(&["KEYS", "*"]).strings();
        keys.sort();
        keys
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    fn log_path(&self) -> PathBuf {
        log_path(self.dir.path())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

impl fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisServer")
            .field("port", &self.port)
            .field("running", &self.child.is_some())
            .field("dir", &self.dir.path())
            .finish()
    }
}

// === impl RespValue ===

impl RespValue {
    /// The value as text: simple strings, errors, integers and bulk strings (lossily decoded).
    pub fn as_string(&self) -> Option<String> {
        match self {
            RespValue::Simple(s) | RespValue::Error(s) => Some(s.clone()),
            RespValue::Integer(i) => Some(i.to_string()),
            RespValue::Bulk(Some(bytes)) => Some(String::from_utf8_lossy(bytes).into_owned()),
            RespValue::Bulk(None) | RespValue::Array(_) => None,
        }
    }

    pub fn as_integer(&self) -> Option<i64> {
        match self {
            RespValue::Integer(i) => Some(*i),
            _ => None,
        }
    }

    pub fn is_nil(&self) -> bool {
        matches!(self, RespValue::Bulk(None) | RespValue::Array(None))
    }

    /// The elements of an array reply as text (an empty vector for anything else).
    pub fn strings(&self) -> Vec<String> {
        match self {
            RespValue::Array(Some(items)) => items.iter().filter_map(Self::as_string).collect(),
            _ => Vec::new(),
        }
    }
}

impl fmt::Debug for RespValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RespValue::Simple(s) => write!(f, "+{s}"),
            RespValue::Error(s) => write!(f, "-{s}"),
            RespValue::Integer(i) => write!(f, ":{i}"),
            RespValue::Bulk(None) | RespValue::Array(None) => f.write_str("(nil)"),
            RespValue::Bulk(Some(b)) => write!(f, "{:?}", String::from_utf8_lossy(b)),
            RespValue::Array(Some(items)) => f.debug_list().entries(items).finish(),
        }
    }
}

impl fmt::Display for RespValue {
    /// The raw text of the reply: strings as they are, arrays one element a line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RespValue::Array(Some(items)) => {
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str("\n")?;
                    }
                    write!(f, "{item}")?;
                }
                Ok(())
            }
            other => f.write_str(&other.as_string().unwrap_or_default()),
        }
    }
}

// === RESP ===

fn send(stream: &mut TcpStream, args: &[&str]) {
    let mut buf = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        buf.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        buf.extend_from_slice(arg.as_bytes());
        buf.extend_from_slice(b"\r\n");
    }
    stream
        .write_all(&buf)
        .unwrap_or_else(|e| panic!("cannot write to redis-server: {e}"));
}

fn read_reply(reader: &mut impl BufRead) -> Result<RespValue, String> {
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(|e| format!("read error: {e}"))?;
    let line = line
        .strip_suffix("\r\n")
        .ok_or_else(|| format!("truncated reply line {line:?}"))?;
    let (kind, rest) = line.split_at_checked(1).ok_or("empty reply line")?;
    let length = || -> Result<i64, String> {
        rest.parse::<i64>()
            .map_err(|e| format!("bad length {rest:?}: {e}"))
    };
    match kind {
        "+" => Ok(RespValue::Simple(rest.to_owned())),
        "-" => Ok(RespValue::Error(rest.to_owned())),
        ":" => Ok(RespValue::Integer(length()?)),
        "$" => {
            let Ok(len) = usize::try_from(length()?) else {
                return Ok(RespValue::Bulk(None));
            };
            let mut data = vec![0; len + 2];
            reader
                .read_exact(&mut data)
                .map_err(|e| format!("read error: {e}"))?;
            data.truncate(len);
            Ok(RespValue::Bulk(Some(data)))
        }
        "*" => {
            let Ok(len) = usize::try_from(length()?) else {
                return Ok(RespValue::Array(None));
            };
            let items = (0..len)
                .map(|_| read_reply(reader))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(RespValue::Array(Some(items)))
        }
        other => Err(format!("unknown reply type {other:?}")),
    }
}

// === helpers ===

fn log_path(dir: &Path) -> PathBuf {
    dir.join("redis.log")
}

/// Spawns redis-server on `port` and waits until it answers, or explains why not (killing
/// what it spawned).
fn spawn_and_wait(
    binary: &Path,
    port: u16,
    dir: &Path,
    extra_args: &[String],
    sentinel: bool,
) -> Result<Child, String> {
    let log = File::options()
        .create(true)
        .append(true)
        .open(log_path(dir))
        .map_err(|e| format!("cannot open the log file: {e}"))?;
    let log2 = log
        .try_clone()
        .map_err(|e| format!("cannot clone the log file handle: {e}"))?;
    let read_log = || std::fs::read_to_string(log_path(dir)).unwrap_or_default();
    // The log accumulates over restarts: readiness is one more "Ready" line than before.
    // Checking our own log, not just PING, matters: if another test's server took the port,
    // it would answer PING while ours exits with "Address already in use".
    let ready_line = if sentinel {
        SENTINEL_READY_LINE
    } else {
        READY_LINE
    };
    let ready_lines = || read_log().matches(ready_line).count();
    let ready_before = ready_lines();
    let mut command = Command::new(binary);
    if sentinel {
        // A sentinel needs a configuration file it can rewrite; the flags fill it.
        let config = dir.join("sentinel.conf");
        std::fs::write(&config, "").map_err(|e| format!("cannot write {config:?}: {e}"))?;
        command.arg(config).arg("--sentinel");
    }
    let mut child = command
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--dir"])
        .arg(dir)
        .args(extra_args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .map_err(|e| format!("cannot spawn {}: {e}", binary.display()))?;

    let deadline = Instant::now() + READY_DEADLINE;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "redis-server exited with {status}; log:\n{}",
                read_log()
            ));
        }
        if ready_lines() > ready_before && answers_ping(port) {
            return Ok(child);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "redis-server did not answer PING within {READY_DEADLINE:?}; log:\n{}",
                read_log()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// True when something on `port` speaks RESP and is ready: `+PONG`, or `-NOAUTH` from a
/// server that wants a password (it is up; it just won't talk to strangers).
fn answers_ping(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .ok();
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut line = String::new();
    if BufReader::new(stream).read_line(&mut line).is_err() {
        return false;
    }
    line.starts_with("+PONG") || line.starts_with("-NOAUTH")
}

fn find_redis_server() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("redis-server"))
        .find(|candidate| candidate.is_file())
}

/// A loopback port nobody listened on a moment ago. Racy by nature (see `START_ATTEMPTS`).
fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap_or_else(|e| panic!("cannot bind a loopback port: {e}"));
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("cannot read a bound socket's address: {e}"))
        .port()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_command_kill_restart() {
        let mut redis = RedisServer::start();
        assert_eq!(redis.command(&["PING"]), RespValue::Simple("PONG".into()));
        assert_eq!(
            redis.command(&["SET", "k", "v w"]),
            RespValue::Simple("OK".into())
        );
        assert_eq!(
            redis.command(&["GET", "k"]).as_string().as_deref(),
            Some("v w")
        );
        assert!(redis.command(&["GET", "missing"]).is_nil());
        assert_eq!(
            redis.command(&["RPUSH", "l", "a", "b"]).as_integer(),
            Some(2)
        );
        assert_eq!(
            redis.command(&["LRANGE", "l", "0", "-1"]).strings(),
            ["a", "b"]
        );
        assert!(matches!(
            redis.command(&["NOSUCHCOMMAND"]),
            RespValue::Error(_)
        ));
        assert_eq!(redis.keys(), ["k", "l"]);

        let port = redis.port();
        redis.kill();
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
        redis.restart();
        assert_eq!(redis.port(), port);
        assert_eq!(redis.keys(), Vec::<String>::new());
        assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}"));
    }

    #[test]
    fn password() {
        let redis = RedisServer::start_with_args(&["--requirepass", "s3cret"]);
        assert_eq!(redis.command(&["PING"]), RespValue::Simple("PONG".into()));
        assert!(redis.log().contains("Ready to accept connections"));
    }

    #[test]
    fn subscribe_sees_what_is_published() {
        let redis = RedisServer::start_with_args(&["--requirepass", "s3cret"]);
        let mut subscriber = redis.subscribe("news");
        assert_eq!(
            redis.command(&["PUBLISH", "news", "hello world"]),
            RespValue::Integer(1)
        );
        assert_eq!(
            subscriber.next_message(),
            ("news".to_owned(), b"hello world".to_vec())
        );
    }

    #[test]
    fn drop_kills() {
        let redis = RedisServer::start();
        let port = redis.port();
        drop(redis);
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    }
}
