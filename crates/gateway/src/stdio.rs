//! Client-facing stdio: one client (the process that launched the gateway) on stdin/stdout.
//!
//! The client is the local user who started the gateway, so its identity is the configured
//! `[stdio]` principal; nothing it sends can change that. Messages are newline-delimited JSON,
//! at most `listen.max_body_bytes` per line and `listen.max_json_depth` deep. Requests run
//! concurrently; responses and notifications are written one line at a time. Logs and audit
//! never go to stdout.

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use micromcp_auth::Principal;
use micromcp_config::Identity;
use micromcp_protocol::era::unsupported_version;
use micromcp_protocol::jsonrpc::error_without_id;
use micromcp_protocol::{
    Era, ErrorObject, Message, ProtocolVersion, Response, error_codes, strict,
};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};

use crate::Gateway;
use crate::outbox::{Outbox, outbox};
use crate::pipeline::Caller;
use crate::session::Session;

/// Serves the stdio client (`input` is its stdin, `output` its stdout) until `input` ends or
/// `shutdown` resolves; in-flight requests are then given `gateway.shutdown_grace` to finish.
pub async fn serve(
    gateway: Arc<Gateway>,
    identity: &Identity,
    input: impl AsyncRead + Unpin,
    output: impl AsyncWrite + Send + Unpin + 'static,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let principal = Principal::from_identity(identity, micromcp_auth::AuthMethod::Stdio);
    let session = Arc::new(Session::new(
        String::new(),
        principal.clone(),
        ProtocolVersion::LATEST_SESSION,
    ));
    let _ = gateway.stdio.set(session.clone());
    let (out_tx, mut out_rx) = outbox::<Value>();

    let writer = tokio::spawn(async move {
        let mut stdout = output;
        while let Some(message) = out_rx.recv().await {
            let mut line = message.to_string();
            line.push('\n');
            if stdout.write_all(line.as_bytes()).await.is_err() || stdout.flush().await.is_err() {
                break;
            }
        }
    });
    let mut notifications = session.open_stream();
    let forward = {
        let out_tx = out_tx.clone();
        tokio::spawn(async move {
            while let Some(n) = notifications.recv().await {
                // A client that is MAX_BACKLOG messages behind misses notifications.
                if out_tx.send(n).is_err() && out_tx.is_closed() {
                    break;
                }
            }
        })
    };

    let max = gateway.config.listen.max_body_bytes;
    let mut lines = FramedRead::new(input, LinesCodec::new_with_max_length(max));
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let line = tokio::select! {
            line = lines.next() => line,
            () = &mut shutdown => break,
        };
        let Some(line) = line else { break };
        let started = Instant::now();
        let line = match line {
            Ok(line) => line,
            Err(LinesCodecError::MaxLineLengthExceeded) => {
                reject(
                    &gateway,
                    &principal,
                    &out_tx,
                    None,
                    error_codes::INVALID_REQUEST,
                    "body-size",
                    &format!("message exceeds {max} bytes"),
                    started,
                );
                continue;
            }
            Err(LinesCodecError::Io(e)) => return Err(e),
        };
        if line.trim().is_empty() {
            continue;
        }
        let message = match strict::parse(line.as_bytes(), gateway.config.listen.max_json_depth) {
            Ok(value) => Message::from_value(value),
            Err(e) => {
                reject(
                    &gateway,
                    &principal,
                    &out_tx,
                    None,
                    error_codes::PARSE_ERROR,
                    "json",
                    &e.to_string(),
                    started,
                );
                continue;
            }
        };
        let message = match message {
            Ok(m) => m,
            Err(e) => {
                reject(
                    &gateway,
                    &principal,
                    &out_tx,
                    e.id.map(|i| i.as_value().clone()),
                    error_codes::INVALID_REQUEST,
                    "jsonrpc",
                    &e.reason,
                    started,
                );
                continue;
            }
        };
        match message {
            Message::Request(request) => {
                let caller = match caller_for(
                    &session,
                    &principal,
                    request.params.as_ref(),
                    &request.method,
                ) {
                    Ok(caller) => Caller {
                        notify: Some(out_tx.clone()),
                        ..caller
                    },
                    Err(error) => {
                        gateway.audit_rejection(
                            "stdio",
                            Some(&principal),
                            Some(&request.method),
                            None,
                            "protocol-meta",
                            &error.message,
                            started,
                        );
                        let _ = out_tx.send_always(Response::err(request.id, error).to_value());
                        continue;
                    }
                };
                if request.method == "initialize" {
                    session.set_version(caller.version);
                }
                let gateway = gateway.clone();
                let out_tx = out_tx.clone();
                tasks.spawn(async move {
                    let response = gateway.handle(&caller, request).await;
                    let _ = out_tx.send_always(response.to_value());
                });
            }
            Message::Notification(n) => {
                if let Ok(caller) = caller_for(&session, &principal, n.params.as_ref(), &n.method) {
                    gateway.handle_notification(&caller, &n);
                }
            }
            Message::Response(_) => {}
        }
        while tasks.try_join_next().is_some() {}
    }
    let grace = gateway.config.gateway.shutdown_grace;
    let _ = tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    tasks.shutdown().await;
    forward.abort();
    drop(out_tx);
    let _ = writer.await;
    Ok(())
}

/// The caller for one message: the era comes from `_meta` (2026-07-28) or the session.
fn caller_for(
    session: &Arc<Session>,
    principal: &Principal,
    params: Option<&Value>,
    method: &str,
) -> Result<Caller, ErrorObject> {
    let meta = params.and_then(|p| p.get("_meta"));
    let meta_version = meta
        .and_then(|m| m.get("io.modelcontextprotocol/protocolVersion"))
        .and_then(Value::as_str);
    let base = Caller {
        principal: principal.clone(),
        transport: "stdio",
        version: session.version(),
        session: Some(session.clone()),
        notify: None,
        client_capabilities: None,
        on_hold: None,
        client_ip: None,
    };
    if method == "initialize" {
        let version = crate::pipeline::initialize_version(params)?;
        return Ok(Caller { version, ..base });
    }
    let Some(meta_version) = meta_version else {
        return Ok(base);
    };
    let Some(version) = ProtocolVersion::parse(meta_version).filter(|v| v.era() == Era::Stateless)
    else {
        return Err(unsupported_version(meta_version));
    };
    let capabilities = meta
        .and_then(|m| m.get("io.modelcontextprotocol/clientCapabilities"))
        .filter(|c| c.is_object())
        .cloned();
    let Some(capabilities) = capabilities else {
        return Err(ErrorObject::new(
            error_codes::INVALID_PARAMS,
            "params._meta must contain \"io.modelcontextprotocol/clientCapabilities\" (an object)",
        ));
    };
    Ok(Caller {
        version,
        client_capabilities: Some(capabilities),
        client_ip: None,
        ..base
    })
}

#[allow(clippy::too_many_arguments)]
fn reject(
    gateway: &Gateway,
    principal: &Principal,
    out: &Outbox<Value>,
    id: Option<Value>,
    code: i64,
    rule: &str,
    reason: &str,
    started: Instant,
) {
    gateway.audit_rejection("stdio", Some(principal), None, None, rule, reason, started);
    let error = ErrorObject::new(code, reason);
    let message = match id {
        Some(id) => json!({ "jsonrpc": "2.0", "id": id, "error": error.to_value() }),
        None => error_without_id(&error),
    };
    let _ = out.send_always(message);
}
