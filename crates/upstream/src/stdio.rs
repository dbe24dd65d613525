//! Stdio upstreams: a supervised child process speaking newline-delimited JSON-RPC.
//!
//! The child gets a cleared environment plus exactly the configured variables, its own process
//! group (so a terminal's Ctrl-C reaches the gateway, which then stops children in order), and
//! is restarted with exponential backoff when it exits. While it is down, calls fail at once
//! with a clear "unavailable" error instead of waiting.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use micromcp_config::Secret;
use micromcp_protocol::{Message, strict, text};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStderr, Command};
use tokio::sync::{mpsc, watch};

use crate::lines::LineReader;
use crate::pending::Pending;
use crate::{
    EventSink, OnBehalf, UPSTREAM_SESSION_VERSION, UpstreamError, UpstreamEvent,
    client_capabilities, client_info,
};

/// Largest message accepted from a child (one line); longer ones are skipped.
const MAX_LINE_BYTES: usize = 64 * 1024 * 1024;
/// Longest stderr line logged; the rest of the line is dropped while it is read.
const MAX_STDERR_LINE_BYTES: usize = 4096;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes waiting for a child's stdin; beyond this the child is not reading, and calls fail.
const MAX_STDIN_BACKLOG_BYTES: usize = 16 * 1024 * 1024;
const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A child that ran this long before exiting restarts with the minimum backoff again.
const HEALTHY_RUN: Duration = Duration::from_secs(60);
const STOP_GRACE: Duration = Duration::from_secs(2);

struct Conn {
    lines: Stdin,
    pending: Arc<Pending>,
    capabilities: Value,
}

impl Conn {
    /// Queues a message for the child; false when it is gone or not reading its input.
    fn send(&self, message: &Value) -> bool {
        self.lines.send(message.to_string())
    }
}

/// Lines waiting for a child's stdin, at most [`MAX_STDIN_BACKLOG_BYTES`] of them (one line
/// always fits): a child that stops reading its input must not make the gateway hold every
/// request sent to it.
#[derive(Clone)]
struct Stdin {
    tx: mpsc::UnboundedSender<String>,
    queued_bytes: Arc<AtomicUsize>,
}

impl Stdin {
    fn send(&self, line: String) -> bool {
        let len = line.len();
        let before = self.queued_bytes.fetch_add(len, Ordering::AcqRel);
        if before > 0 && before + len > MAX_STDIN_BACKLOG_BYTES {
            self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            return false;
        }
        if self.tx.send(line).is_err() {
            self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            return false;
        }
        true
    }
}

pub struct StdioUpstream {
    name: String,
    conn: RwLock<Option<Arc<Conn>>>,
    down_reason: Mutex<String>,
    stop: watch::Sender<bool>,
    /// Becomes true once the first start attempt has finished (ready or failed).
    started: watch::Sender<bool>,
    supervisor: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

struct Launch {
    program: String,
    args: Vec<String>,
    cwd: Option<PathBuf>,
    env: BTreeMap<String, Secret>,
}

impl StdioUpstream {
    pub fn start(
        name: &str,
        program: String,
        args: Vec<String>,
        cwd: Option<PathBuf>,
        env: BTreeMap<String, Secret>,
        events: EventSink,
    ) -> Arc<Self> {
        let (stop, _) = watch::channel(false);
        let (started, _) = watch::channel(false);
        let this = Arc::new(Self {
            name: name.to_owned(),
            conn: RwLock::new(None),
            down_reason: Mutex::new("starting".into()),
            stop,
            started,
            supervisor: Mutex::new(None),
        });
        let launch = Launch {
            program,
            args,
            cwd,
            env,
        };
        let task = tokio::spawn(supervise(this.clone(), launch, events));
        *lock(&this.supervisor) = Some(task);
        this
    }

    fn current(&self) -> Result<Arc<Conn>, UpstreamError> {
        let conn = self
            .conn
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        conn.ok_or_else(|| UpstreamError::Unavailable {
            service: self.name.clone(),
            reason: lock(&self.down_reason).clone(),
        })
    }

    pub fn capabilities(&self) -> Option<Value> {
        self.current().ok().map(|c| c.capabilities.clone())
    }

    pub fn started(&self) -> watch::Receiver<bool> {
        self.started.subscribe()
    }

    /// Sends a request; an [`OnBehalf::Meta`] identity is bound to its id (a bearer token
    /// means nothing on a pipe and is not sent).
    pub async fn request(
        &self,
        method: &str,
        params: Option<Value>,
        on_behalf: OnBehalf<'_>,
    ) -> Result<Value, UpstreamError> {
        let conn = self.current()?;
        call(&conn, &self.name, method, params, on_behalf).await
    }

    pub fn notify(&self, method: &str, params: Option<Value>) {
        if let Ok(conn) = self.current() {
            conn.send(&notification(method, params));
        }
    }

    pub async fn shutdown(&self) {
        self.stop.send_replace(true);
        let task = lock(&self.supervisor).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

fn notification(method: &str, params: Option<Value>) -> Value {
    let mut n = json!({ "jsonrpc": "2.0", "method": method });
    if let Some(p) = params {
        n["params"] = p;
    }
    n
}

/// Sends one request on `conn` and waits for the reply. If the future is dropped first, the
/// upstream is told to cancel.
async fn call(
    conn: &Arc<Conn>,
    service: &str,
    method: &str,
    mut params: Option<Value>,
    on_behalf: OnBehalf<'_>,
) -> Result<Value, UpstreamError> {
    let (id, reply) = conn.pending.register();
    on_behalf.stamp(id, &mut params);
    let mut guard = CancelOnDrop {
        conn: Some(conn.clone()),
        id,
    };
    let mut request = json!({ "jsonrpc": "2.0", "id": id, "method": method });
    if let Some(p) = params {
        request["params"] = p;
    }
    let unavailable = |reason: &str| UpstreamError::Unavailable {
        service: service.to_owned(),
        reason: reason.to_owned(),
    };
    if !conn.send(&request) {
        return Err(unavailable(
            "connection closed, or the service is not reading its input",
        ));
    }
    let reply = reply
        .await
        .map_err(|_| unavailable("the process exited before answering"))?;
    guard.conn = None;
    reply.map_err(|error| UpstreamError::Rpc {
        service: service.to_owned(),
        error: Box::new(error),
    })
}

struct CancelOnDrop {
    conn: Option<Arc<Conn>>,
    id: u64,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take()
            && conn.pending.forget(self.id)
        {
            let params = json!({ "requestId": self.id, "reason": "cancelled by the gateway" });
            conn.send(&notification("notifications/cancelled", Some(params)));
        }
    }
}

async fn supervise(this: Arc<StdioUpstream>, launch: Launch, events: EventSink) {
    let mut stop = this.stop.subscribe();
    let mut backoff = MIN_BACKOFF;
    let set_down = |reason: String| *lock(&this.down_reason) = reason;
    loop {
        if *stop.borrow() {
            break;
        }
        let started = Instant::now();
        match spawn(&launch) {
            Err(e) => {
                tracing::error!(service = %this.name, "cannot start: {e}");
                set_down(format!("cannot start: {e}"));
                this.started.send_replace(true);
            }
            Ok(mut child) => {
                let (conn, reader) = connect(&this.name, &mut child, events.clone());
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&conn, &this.name)).await {
                    Ok(Ok(capabilities)) => {
                        let conn = Arc::new(Conn {
                            capabilities,
                            ..conn
                        });
                        *this
                            .conn
                            .write()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) =
                            Some(conn.clone());
                        tracing::info!(service = %this.name, pid = child.id(), "service is ready");
                        // Its tools, prompts and resources (re)appear: clients should list again.
                        announce_lists_changed(&this.name, &events);
                    }
                    Ok(Err(e)) => set_down(format!("initialization failed: {e}")),
                    Err(_) => set_down("initialization timed out".into()),
                }
                this.started.send_replace(true);
                let stopped = tokio::select! {
                    status = child.wait() => {
                        let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                        tracing::warn!(service = %this.name, "process exited ({status}); restarting");
                        set_down(format!("process exited ({status}); restarting"));
                        false
                    }
                    _ = stop.wait_for(|s| *s) => true,
                };
                let old = this
                    .conn
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take();
                if let Some(old) = &old {
                    old.pending.fail_all();
                }
                drop(old);
                if stopped {
                    set_down("the gateway is shutting down".into());
                    stop_child(&this.name, child).await;
                    reader.abort();
                    break;
                }
                reader.abort();
                if started.elapsed() >= HEALTHY_RUN {
                    backoff = MIN_BACKOFF;
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Tells the gateway that a service's lists may have changed (it became ready).
pub(crate) fn announce_lists_changed(service: &str, events: &EventSink) {
    for method in [
        "notifications/tools/list_changed",
        "notifications/prompts/list_changed",
        "notifications/resources/list_changed",
    ] {
        events(UpstreamEvent {
            service: service.to_owned(),
            method: method.into(),
            params: None,
        });
    }
}

async fn handshake(conn: &Conn, service: &str) -> Result<Value, UpstreamError> {
    let conn = Arc::new(Conn {
        lines: conn.lines.clone(),
        pending: conn.pending.clone(),
        capabilities: Value::Null,
    });
    let params = json!({
        "protocolVersion": UPSTREAM_SESSION_VERSION,
        "capabilities": client_capabilities(),
        "clientInfo": client_info(),
    });
    let result = call(
        &conn,
        service,
        "initialize",
        Some(params),
        OnBehalf::Gateway,
    )
    .await?;
    conn.send(&notification("notifications/initialized", None));
    Ok(result
        .get("capabilities")
        .cloned()
        .unwrap_or_else(|| json!({})))
}

fn spawn(launch: &Launch) -> std::io::Result<Child> {
    let program = resolve_program(&launch.program)?;
    let mut cmd = Command::new(program);
    cmd.args(&launch.args)
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v.expose())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    if let Some(cwd) = &launch.cwd {
        cmd.current_dir(cwd);
    }
    cmd.spawn()
}

/// Finds a bare program name on the gateway's own PATH (the child's environment is cleared, so
/// it could not); names with a `/` are used as given.
fn resolve_program(program: &str) -> std::io::Result<PathBuf> {
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{program:?} not found on PATH"),
            )
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Wires the child's pipes: a writer task for stdin, a reader task for stdout, a logger for
/// stderr. The returned handle is the stdout reader.
fn connect(
    service: &str,
    child: &mut Child,
    events: EventSink,
) -> (Conn, tokio::task::JoinHandle<()>) {
    let (tx, mut lines_rx) = mpsc::unbounded_channel::<String>();
    let lines_tx = Stdin {
        tx,
        queued_bytes: Arc::new(AtomicUsize::new(0)),
    };
    let pending = Arc::new(Pending::default());
    if let Some(mut stdin) = child.stdin.take() {
        let queued_bytes = lines_tx.queued_bytes.clone();
        tokio::spawn(async move {
            while let Some(mut line) = lines_rx.recv().await {
                let len = line.len();
                line.push('\n');
                let written =
                    stdin.write_all(line.as_bytes()).await.is_ok() && stdin.flush().await.is_ok();
                queued_bytes.fetch_sub(len, Ordering::AcqRel);
                if !written {
                    break;
                }
            }
        });
    }
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(log_stderr(service.to_owned(), stderr));
    }
    let stdout = child.stdout.take();
    let reader = {
        let pending = pending.clone();
        let lines_tx = lines_tx.clone();
        let service = service.to_owned();
        tokio::spawn(async move {
            let Some(stdout) = stdout else { return };
            let mut lines = LineReader::new(stdout, MAX_LINE_BYTES);
            while let Some(line) = lines.next_line().await {
                if line.is_truncated() {
                    tracing::warn!(
                        service = %service,
                        "skipping a message longer than {MAX_LINE_BYTES} bytes"
                    );
                    continue;
                }
                match std::str::from_utf8(line.text()) {
                    Ok(text) => on_line(&service, text, &pending, &lines_tx, &events),
                    Err(_) => {
                        tracing::warn!(service = %service, "skipping a line that is not UTF-8");
                    }
                }
            }
        })
    };
    (
        Conn {
            lines: lines_tx,
            pending,
            capabilities: Value::Null,
        },
        reader,
    )
}

fn on_line(service: &str, line: &str, pending: &Pending, out: &Stdin, events: &EventSink) {
    if line.trim().is_empty() {
        return;
    }
    let message = strict::parse(line.as_bytes(), 128)
        .map_err(|e| e.to_string())
        .and_then(|v| Message::from_value(v).map_err(|e| e.reason));
    match message {
        Ok(Message::Response(r)) => {
            let delivered =
                r.id.as_u64()
                    .is_some_and(|id| pending.complete(id, r.outcome));
            if !delivered {
                let id = r.id.to_string();
                tracing::debug!(service, id = %text::escape(&id), "response for no waiting request (late or cancelled)");
            }
        }
        Ok(Message::Notification(n)) => {
            events(UpstreamEvent {
                service: service.to_owned(),
                method: n.method,
                params: n.params,
            });
        }
        Ok(Message::Request(r)) => {
            let _ = out.send(crate::answer_server_request(r).to_value().to_string());
        }
        Err(e) => {
            tracing::warn!(
                service,
                "ignoring a line that is not JSON-RPC: {}",
                text::escape(&e)
            );
        }
    }
}

/// Logs a child's stderr, line by line, until the child closes it. Each line is one event with
/// the text as an escaped field: nothing a service writes can start a new log line, drive a
/// terminal or pass for one of the gateway's own log or audit lines.
async fn log_stderr(service: String, stderr: ChildStderr) {
    let mut lines = LineReader::new(stderr, MAX_STDERR_LINE_BYTES);
    while let Some(line) = lines.next_line().await {
        let text = String::from_utf8_lossy(line.text());
        tracing::info!(
            target: "micromcp::upstream::stderr",
            service = %service,
            truncated = line.is_truncated(),
            // Last, so that everything after `line=` is the service's (escaped) text.
            line = %text::escape(&text),
            "service stderr"
        );
    }
}

/// Stops a child: close stdin and wait, then SIGTERM the process group, then SIGKILL it.
async fn stop_child(service: &str, mut child: Child) {
    drop(child.stdin.take());
    if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_ok() {
        return;
    }
    let group = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(nix::unistd::Pid::from_raw);
    if let Some(group) = group {
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGTERM);
        if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_ok() {
            return;
        }
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
    }
    tracing::warn!(service, "service did not stop in time; killed");
    let _ = child.kill().await;
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
