//! `micromcp approvals list|show|approve|deny`: an approver's side of held calls, through the
//! gateway's admin API (docs/approvals.md). The admin token comes from `MICROMCP_ADMIN_TOKEN`
//! (never an argument: it would show in the process list and shell history).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use micromcp_gateway::approvals::arguments_sha256;
use serde_json::{Value, json};

/// The variable that holds the approver's admin token.
pub const TOKEN_ENV: &str = "MICROMCP_ADMIN_TOKEN";

#[derive(Args)]
pub struct Target {
    /// The admin API's base URL, e.g. http://127.0.0.1:8081
    #[arg(long, global = true, conflicts_with = "config")]
    admin: Option<String>,
    /// A gateway config file: the admin API is at its [admin] addr.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum Command {
    /// List the calls waiting for approval.
    List,
    /// Show a held call: tool, full arguments, requester and the arguments' SHA-256.
    Show { id: String },
    /// Approve a held call: shows it, then approves exactly the arguments shown.
    Approve {
        id: String,
        /// Why (kept in the audit record and told to the requester).
        #[arg(long)]
        reason: Option<String>,
        /// Approve without showing: confirm this SHA-256 of the arguments (from `show`).
        #[arg(long, value_name = "SHA256")]
        arguments_sha256: Option<String>,
    },
    /// Deny a held call; the requester gets an error with the reason.
    Deny {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

pub async fn run(target: Target, command: Command) -> anyhow::Result<ExitCode> {
    let api = Api::new(&target)?;
    match command {
        Command::List => {
            let list = api.get("/v1/approvals").await?;
            print_list(list["approvals"].as_array().map_or(&[][..], Vec::as_slice));
        }
        Command::Show { id } => {
            let call = api
                .get(&format!("/v1/approvals/{}", path_segment(&id)?))
                .await?;
            print_call(&call);
        }
        Command::Approve {
            id,
            reason,
            arguments_sha256: confirmed,
        } => {
            let path = format!("/v1/approvals/{}", path_segment(&id)?);
            let hash = match confirmed {
                Some(hash) => hash,
                None => {
                    let call = api.get(&path).await?;
                    print_call(&call);
                    // The hash of what was just shown, computed here: the gateway approves
                    // only if the call it holds has exactly these arguments.
                    let shown = arguments_sha256(&call["arguments"]);
                    if call["arguments_sha256"].as_str() != Some(shown.as_str()) {
                        bail!(
                            "the gateway's arguments_sha256 does not match the arguments it showed; not approving"
                        );
                    }
                    shown
                }
            };
            let decided = api
                .post(
                    &format!("{path}/approve"),
                    &json!({ "reason": reason, "arguments_sha256": hash }),
                )
                .await?;
            println!(
                "\napproved {} ({} for {}); the call goes on",
                plain(decided["id"].as_str().unwrap_or(&id)),
                plain(decided["tool"].as_str().unwrap_or("?")),
                requester(&decided["requester"]),
            );
        }
        Command::Deny { id, reason } => {
            let path = format!("/v1/approvals/{}/deny", path_segment(&id)?);
            let decided = api.post(&path, &json!({ "reason": reason })).await?;
            println!(
                "denied {} ({} for {}); the call fails",
                plain(decided["id"].as_str().unwrap_or(&id)),
                plain(decided["tool"].as_str().unwrap_or("?")),
                requester(&decided["requester"]),
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// An approval id as one URL path segment (ids are `apr_` and hex; anything else is a typo).
fn path_segment(id: &str) -> anyhow::Result<&str> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        bail!("{id:?} is not an approval id (they look like apr_0123…)");
    }
    Ok(id)
}

struct Api {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Api {
    fn new(target: &Target) -> anyhow::Result<Self> {
        let base = match (&target.admin, &target.config) {
            (Some(url), _) => url.trim_end_matches('/').to_owned(),
            (None, Some(file)) => {
                let addr = micromcp_config::admin_addr(file).map_err(anyhow::Error::msg)?;
                if addr.port() == 0 {
                    bail!(
                        "{}: admin.addr has port 0 (chosen at start); pass --admin with the address the gateway printed",
                        file.display()
                    );
                }
                let ip = match addr.ip() {
                    ip if !ip.is_unspecified() => ip,
                    std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                };
                format!("http://{}", std::net::SocketAddr::new(ip, addr.port()))
            }
            (None, None) => bail!(
                "say where the admin API is: --admin http://127.0.0.1:PORT or --config gateway.toml"
            ),
        };
        let token = std::env::var(TOKEN_ENV)
            .ok()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .with_context(|| {
                format!("set {TOKEN_ENV} to your admin token (an [[admin.tokens]] entry's token)")
            })?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Self { base, token, http })
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let request = self
            .http
            .post(format!("{}{path}", self.base))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        self.send(request).await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let response = request
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("cannot reach the admin API at {}", self.base))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .with_context(|| format!("the admin API's answer (HTTP {status}) did not arrive"))?;
        let body: Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("the admin API answered HTTP {status} without JSON"))?;
        if !status.is_success() {
            let error = &body["error"];
            bail!(
                "refused (HTTP {} {}): {}",
                status.as_u16(),
                plain(error["code"].as_str().unwrap_or("error")),
                plain(error["message"].as_str().unwrap_or("no reason given"))
            );
        }
        Ok(body)
    }
}

fn print_list(calls: &[Value]) {
    if calls.is_empty() {
        println!("no calls are waiting for approval");
        return;
    }
    let rows: Vec<[String; 5]> = calls
        .iter()
        .map(|c| {
            [
                plain(c["id"].as_str().unwrap_or("?")),
                plain(c["tool"].as_str().unwrap_or("?")),
                requester(&c["requester"]),
                ago(&c["created"]),
                left(&c["expires"]),
            ]
        })
        .collect();
    let header = ["ID", "TOOL", "REQUESTER", "WAITING", "EXPIRES IN"].map(String::from);
    let widths: Vec<usize> = (0..5)
        .map(|i| {
            rows.iter()
                .chain([&header])
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in [&header].into_iter().chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}

fn print_call(call: &Value) {
    let policies: Vec<String> = call["policies"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(plain)
        .collect();
    println!(
        "approval          {}",
        plain(call["id"].as_str().unwrap_or("?"))
    );
    println!(
        "tool              {} ({})",
        plain(call["tool"].as_str().unwrap_or("?")),
        plain(call["method"].as_str().unwrap_or("?"))
    );
    println!("requester         {}", requester(&call["requester"]));
    println!(
        "created           {} ({} ago)",
        plain(call["created"].as_str().unwrap_or("?")),
        ago(&call["created"])
    );
    println!(
        "expires           {} (in {})",
        plain(call["expires"].as_str().unwrap_or("?")),
        left(&call["expires"])
    );
    println!("policies          {}", policies.join(", "));
    println!(
        "arguments_sha256  {}",
        plain(call["arguments_sha256"].as_str().unwrap_or("?"))
    );
    println!("arguments:\n{}", pretty(&call["arguments"]));
}

fn requester(r: &Value) -> String {
    let mut text = plain(r["user"].as_str().unwrap_or("?"));
    if let Some(agent) = r["agent"].as_str() {
        text += &format!(" (agent {})", plain(agent));
    }
    if let Some(tenant) = r["tenant"].as_str() {
        text += &format!(" [tenant {}]", plain(tenant));
    }
    text
}

fn ago(time: &Value) -> String {
    parse_time(time)
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .map_or_else(|| "0s".into(), rounded)
}

fn left(time: &Value) -> String {
    parse_time(time)
        .and_then(|t| t.duration_since(SystemTime::now()).ok())
        .map_or_else(|| "0s".into(), rounded)
}

fn parse_time(time: &Value) -> Option<SystemTime> {
    humantime::parse_rfc3339(time.as_str()?).ok()
}

fn rounded(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

/// Text from the gateway (tool names, user names) with control characters and invisible or
/// reordering ones (zero-width, bidi overrides) written as escapes, so it shows what it is and
/// cannot rewrite the approver's terminal.
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if hidden(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// Pretty JSON whose strings show hidden characters as `\u` escapes (four hex digits) (JSON already escapes
/// control characters; the value, and so its hash, is unchanged).
fn pretty(value: &Value) -> String {
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| "?".into());
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if invisible(c) {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn hidden(c: char) -> bool {
    c.is_control() || invisible(c)
}

/// Zero-width and bidi formatting characters (and a few other invisible ones).
fn invisible(c: char) -> bool {
    matches!(c,
            '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}' | '\u{feff}' | '\u{00ad}' | '\u{061c}' | '\u{180e}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_characters_are_shown_as_escapes_without_changing_the_value() {
        assert_eq!(plain("fs.read\u{1b}[2J"), "fs.read\\u{1b}[2J");
        let arguments = json!({ "path": "/tmp/\u{202e}gnp.exe", "note": "a\u{200b}b" });
        let shown = pretty(&arguments);
        assert!(shown.contains(r#""/tmp/\u202egnp.exe""#), "{shown}");
        assert!(shown.contains(r#""a\u200bb""#), "{shown}");
        let back: Value = serde_json::from_str(&shown).expect("still JSON");
        assert_eq!(back, arguments);
        assert_eq!(arguments_sha256(&back), arguments_sha256(&arguments));
    }
}
