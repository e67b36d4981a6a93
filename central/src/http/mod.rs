//! The read-only web dashboard and its JSON API (`diatom-central --http`).
//!
//! This module owns the HTTP side: the token file, the listening socket,
//! the routes and the page (plain HTML, CSS and JavaScript compiled into
//! the binary with `include_str!`, no external assets). It serves with axum
//! on a single-threaded tokio runtime on its own thread; every answer comes
//! from [`Central`]'s JSON builders, the ones `diatom nodes/ps/status
//! --json` print through the control socket, so scripts and the page see
//! one source. Store queries run on tokio's blocking pool, never on the
//! thread that accepts connections.
//!
//! Routes: `/` (the page, with `/dashboard.css` and `/dashboard.js`),
//! `/api/status`, `/api/nodes`, `/api/jobs` (query `state`, `user`,
//! `node`, `limit`, `before`), `/api/jobs/ID`, `/api/history`. Nothing
//! changes state: only GET and HEAD are routed.
//!
//! **Limits.** At most [`MAX_CONNECTIONS`] connections are served at once
//! and one idle for [`IDLE`] is closed, so a client that opens many and
//! sends nothing cannot take the descriptors central needs for its jobs.
//!
//! **Token.** With a token file every `/api` request (and any path other
//! than the page's three files, which hold no cluster data) needs
//! `Authorization: Bearer TOKEN`, else it gets a bare 401. The page reads
//! the token from the URL fragment (`/#token=...`, never sent to the
//! server) or asks for it, and sends it with each API request.

use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::Listener;
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

use crate::daemon::core::Central;
use crate::store::{JobFilter, JobId, JobState, StoreError};

/// Most jobs one `/api/jobs` page returns.
pub const MAX_PAGE: u32 = 1000;
/// Jobs per page when `limit` is not given.
pub const DEFAULT_PAGE: u32 = 50;
/// A token file longer than this is not a token.
const MAX_TOKEN_FILE: u64 = 4096;
/// Connections served at once; more wait to be accepted. Keeps the
/// dashboard from taking the descriptors central needs for jobs.
pub const MAX_CONNECTIONS: usize = 64;
/// A connection with no bytes either way for this long is closed (a
/// browser reconnects when it next polls).
pub const IDLE: Duration = Duration::from_secs(60);

/// What can stop the dashboard from starting. Each message is one line.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The token file could not be read (missing, unreadable).
    #[error("cannot read --http-token {path}: {source}")]
    TokenRead {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The token file is readable or writable by group or others.
    #[error("--http-token {path} has mode {mode:04o}: it must not be accessible by group or others (chmod 600)")]
    TokenMode {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The token file is empty, too long, or not one line of printable
    /// ASCII.
    #[error("--http-token {path}: {reason}")]
    TokenMalformed {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The dashboard's address could not be bound.
    #[error("cannot listen on --http {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// The serving thread or its runtime could not start.
    #[error("cannot start the dashboard: {0}")]
    Start(io::Error),
}

/// Reads a bearer token file: a regular file of mode 0600 or stricter
/// holding one line of printable ASCII (surrounding whitespace ignored).
pub fn load_token(path: &Path) -> Result<String, HttpError> {
    let read_err = |source| HttpError::TokenRead {
        path: path.to_owned(),
        source,
    };
    let malformed = |reason| HttpError::TokenMalformed {
        path: path.to_owned(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if !meta.is_file() {
        return Err(malformed("not a regular file"));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(HttpError::TokenMode {
            path: path.to_owned(),
            mode,
        });
    }
    if meta.len() > MAX_TOKEN_FILE {
        return Err(malformed("longer than 4096 bytes"));
    }
    let text = std::fs::read_to_string(path).map_err(read_err)?;
    let token = text.trim();
    if token.is_empty() {
        return Err(malformed("empty"));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(malformed(
            "the token must be one word of printable ASCII characters",
        ));
    }
    Ok(token.to_owned())
}

/// Binds the dashboard's address now, so a bad address fails the start.
pub fn bind(addr: SocketAddr) -> Result<TcpListener, HttpError> {
    let l = TcpListener::bind(addr).map_err(|source| HttpError::Bind { addr, source })?;
    l.set_nonblocking(true)
        .map_err(|source| HttpError::Bind { addr, source })?;
    Ok(l)
}

/// What every handler sees.
struct App {
    central: Arc<Central>,
    token: Option<String>,
}

/// Serves the dashboard on `listener` from a thread of its own until the
/// process ends. `token`: the bearer token every API request must carry.
pub fn spawn(
    listener: TcpListener,
    token: Option<String>,
    central: Arc<Central>,
) -> Result<(), HttpError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(4)
        .thread_name("http-store")
        .build()
        .map_err(HttpError::Start)?;
    let app = router(Arc::new(App { central, token }));
    std::thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => Limited::new(l, MAX_CONNECTIONS, IDLE),
                    Err(e) => {
                        log::error!("dashboard: {e}");
                        return;
                    }
                };
                if let Err(e) = axum::serve(listener, app).await {
                    log::error!("dashboard stopped: {e}");
                }
            });
        })
        .map_err(HttpError::Start)?;
    Ok(())
}

/// The dashboard's listener: at most `max` connections at once, each
/// closed after `idle` without traffic (see [`MAX_CONNECTIONS`], [`IDLE`]).
struct Limited {
    inner: tokio::net::TcpListener,
    permits: Arc<Semaphore>,
    idle: Duration,
}

impl Limited {
    fn new(inner: tokio::net::TcpListener, max: usize, idle: Duration) -> Self {
        Self {
            inner,
            permits: Arc::new(Semaphore::new(max)),
            idle,
        }
    }
}

impl Listener for Limited {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        // `None` only if the semaphore were closed, which it never is.
        let permit = Arc::clone(&self.permits).acquire_owned().await.ok();
        let (io, addr) = Listener::accept(&mut self.inner).await;
        let conn = Conn {
            io,
            idle: self.idle,
            deadline: Box::pin(tokio::time::sleep(self.idle)),
            _permit: permit,
        };
        (conn, addr)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// One accepted connection: holds its slot until dropped, and fails its
/// next read or write once it has been idle past its deadline.
struct Conn {
    io: tokio::net::TcpStream,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Conn {
    /// What a poll of the socket gives: progress pushes the deadline back;
    /// waiting past it is an error, so hyper drops the connection.
    fn watch<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match r {
            Poll::Ready(r) => {
                let next = tokio::time::Instant::now() + self.idle;
                self.deadline.as_mut().reset(next);
                Poll::Ready(r)
            }
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "idle dashboard connection",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        let r = Pin::new(&mut me.io).poll_read(cx, buf);
        me.watch(cx, r)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        let r = Pin::new(&mut me.io).poll_write(cx, buf);
        me.watch(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        let r = Pin::new(&mut me.io).poll_write_vectored(cx, bufs);
        me.watch(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/dashboard.css", get(css))
        .route("/dashboard.js", get(js))
        .route("/api/status", get(status))
        .route("/api/nodes", get(nodes))
        .route("/api/jobs", get(jobs))
        .route("/api/jobs/{id}", get(job))
        .route("/api/history", get(history))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(Arc::clone(&app), guard))
        .with_state(app)
}

/// The page's own files: no cluster data, served without the token so a
/// browser can load the page that then asks for it.
const PUBLIC: [&str; 3] = ["/", "/dashboard.css", "/dashboard.js"];

/// Refuses requests without the bearer token (when there is one) with a
/// bare 401, and marks every answer as not to be cached or framed.
async fn guard(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    if let Some(token) = &app.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let ok = given.is_some_and(|g| same_secret(g.trim().as_bytes(), token.as_bytes()));
        if !ok && !PUBLIC.contains(&req.uri().path()) {
            return StatusCode::UNAUTHORIZED.into_response();
        }
    }
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
        ),
    );
    resp
}

/// Compares without an early exit, so the time taken does not tell how
/// much of a guess was right.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

async fn page() -> Response {
    asset("text/html; charset=utf-8", include_str!("dashboard.html"))
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", include_str!("dashboard.css"))
}

async fn js() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("dashboard.js"),
    )
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such page")
}

fn error(code: StatusCode, msg: impl std::fmt::Display) -> Response {
    json_response(code, &json!({ "error": msg.to_string() }))
}

fn json_response(code: StatusCode, v: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

/// Runs `f` (store queries, locks) on the blocking pool and answers its
/// JSON, a 404 for `None`, or a 500 naming the store error.
async fn answer<F>(app: Arc<App>, f: F) -> Response
where
    F: FnOnce(&Central) -> Result<Option<Value>, StoreError> + Send + 'static,
{
    match tokio::task::spawn_blocking(move || f(&app.central)).await {
        Ok(Ok(Some(v))) => json_response(StatusCode::OK, &v),
        Ok(Ok(None)) => error(StatusCode::NOT_FOUND, "no such job"),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn status(State(app): State<Arc<App>>) -> Response {
    answer(app, |c| Ok(Some(c.status_json()))).await
}

async fn nodes(State(app): State<Arc<App>>) -> Response {
    answer(app, |c| Ok(Some(c.nodes_json()))).await
}

async fn history(State(app): State<Arc<App>>) -> Response {
    answer(app, |c| Ok(Some(c.history_json()))).await
}

/// `/api/jobs` query parameters, all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsQuery {
    /// `running`, `exited`, `killed`, `lost`, or `all` (the default).
    pub state: Option<String>,
    /// A user name or uid.
    pub user: Option<String>,
    /// A node name.
    pub node: Option<String>,
    /// Page size (default [`DEFAULT_PAGE`], at most [`MAX_PAGE`]).
    pub limit: Option<u32>,
    /// Only jobs with a smaller id: the last id of the previous page.
    pub before: Option<u64>,
}

impl JobsQuery {
    /// The store filter this query asks for, or why it is wrong.
    pub fn filter(&self) -> Result<JobFilter, String> {
        let state = match self.state.as_deref() {
            None | Some("") | Some("all") => None,
            Some(s) => Some(
                s.parse::<JobState>()
                    .map_err(|_| format!("unknown state {s:?}"))?,
            ),
        };
        let uid = match self.user.as_deref() {
            None | Some("") => None,
            Some(u) => Some(uid_of(u).ok_or_else(|| format!("unknown user {u:?}"))?),
        };
        let limit = self.limit.unwrap_or(DEFAULT_PAGE);
        if limit == 0 || limit > MAX_PAGE {
            return Err(format!("limit must be 1 to {MAX_PAGE}"));
        }
        Ok(JobFilter {
            state,
            uid,
            node: self.node.clone().filter(|n| !n.is_empty()),
            include_finished: true,
            limit: Some(limit),
            // Ids are SQLite integers: anything above is "before all".
            before: self.before.map(|b| JobId(b.min(i64::MAX as u64))),
        })
    }
}

/// A user name's uid on central, or the uid given as a number.
fn uid_of(user: &str) -> Option<u32> {
    if let Ok(uid) = user.parse() {
        return Some(uid);
    }
    nix::unistd::User::from_name(user)
        .ok()
        .flatten()
        .map(|u| u.uid.as_raw())
}

async fn jobs(
    State(app): State<Arc<App>>,
    query: Result<Query<JobsQuery>, QueryRejection>,
) -> Response {
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    // A user name is looked up through NSS, which may block: off the
    // accepting thread.
    let filter = match tokio::task::spawn_blocking(move || q.filter()).await {
        Ok(Ok(f)) => f,
        Ok(Err(why)) => return error(StatusCode::BAD_REQUEST, why),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    answer(app, move |c| c.jobs_page(&filter).map(Some)).await
}

async fn job(State(app): State<Arc<App>>, UrlPath(id): UrlPath<String>) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return error(StatusCode::BAD_REQUEST, "a job id is a number");
    };
    if i64::try_from(id).is_err() {
        // Past what the store can hold: no such job.
        return error(StatusCode::NOT_FOUND, "no such job");
    }
    answer(app, move |c| c.job_json(JobId(id))).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files_are_checked() {
        let dir = std::env::temp_dir().join(format!("diatom-http-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("token");
        std::fs::write(&p, "s3cret-token\n").unwrap();
        for mode in [0o640, 0o604, 0o620, 0o644] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = load_token(&p).unwrap_err();
            assert!(matches!(e, HttpError::TokenMode { .. }), "{mode:o}: {e}");
            assert!(!e.to_string().contains('\n'));
        }
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(load_token(&p).unwrap(), "s3cret-token");
        for bad in ["", "  \n", "two words", "t\u{e9}"] {
            std::fs::write(&p, bad).unwrap();
            assert!(
                matches!(load_token(&p), Err(HttpError::TokenMalformed { .. })),
                "{bad:?}"
            );
        }
        assert!(matches!(
            load_token(&dir.join("none")),
            Err(HttpError::TokenRead { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Two slots and a short idle time: two silent connections hold both,
    /// a third request waits until the server closes an idle one, then is
    /// answered; the silent ones end with EOF or a reset, never a hang.
    #[test]
    fn connections_are_capped_and_idle_ones_closed() {
        use std::io::{Read, Write};
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        std::thread::spawn(move || {
            rt.block_on(async move {
                let l = tokio::net::TcpListener::from_std(std_listener).unwrap();
                let app = Router::new().route("/", get(|| async { "served" }));
                let _ = axum::serve(Limited::new(l, 2, Duration::from_secs(1)), app).await;
            })
        });
        let wait = Some(Duration::from_secs(30));
        let silent: Vec<std::net::TcpStream> = (0..2)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.set_read_timeout(wait).unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        c.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("served"), "{answer}");
        // The third was accepted only once a slot came free: a silent one
        // is already closed (its socket closes before its slot is given
        // back), where without the cap both would still be open.
        let closed = silent.iter().filter(|s| {
            s.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 1];
            let gone = !matches!((&**s).read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
            s.set_nonblocking(false).unwrap();
            gone
        });
        assert!(
            closed.count() >= 1,
            "the third connection waited for a slot"
        );
        for mut s in silent {
            s.set_read_timeout(wait).unwrap();
            let mut buf = [0u8; 16];
            match s.read(&mut buf) {
                Ok(n) => assert_eq!(n, 0, "an idle connection gets nothing but its end"),
                Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
            }
        }
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"ab", b"abc"));
        assert!(!same_secret(b"", b"a"));
    }

    #[test]
    fn job_queries_become_filters() {
        let q = JobsQuery {
            state: Some("exited".into()),
            user: Some("0".into()),
            node: Some("node1".into()),
            limit: Some(10),
            before: Some(99),
        };
        let f = q.filter().unwrap();
        assert_eq!(f.state, Some(JobState::Exited));
        assert_eq!(f.uid, Some(0));
        assert_eq!(f.node.as_deref(), Some("node1"));
        assert_eq!(f.limit, Some(10));
        assert_eq!(f.before, Some(JobId(99)));
        assert!(f.include_finished);
        let all = JobsQuery::default().filter().unwrap();
        assert_eq!((all.state, all.limit), (None, Some(DEFAULT_PAGE)));
        assert_eq!(
            JobsQuery {
                user: Some("root".into()),
                ..Default::default()
            }
            .filter()
            .unwrap()
            .uid,
            Some(0)
        );
        for bad in [
            JobsQuery {
                state: Some("sleeping".into()),
                ..Default::default()
            },
            JobsQuery {
                limit: Some(0),
                ..Default::default()
            },
            JobsQuery {
                limit: Some(MAX_PAGE + 1),
                ..Default::default()
            },
            JobsQuery {
                user: Some("no-such-user-here".into()),
                ..Default::default()
            },
        ] {
            assert!(bad.filter().is_err(), "{bad:?}");
        }
    }
}
