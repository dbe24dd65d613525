//! The DNS step of a fetch, where rebinding is stopped.
//!
//! reqwest asks [`GuardedResolver`] for a name's addresses and connects only to what it
//! returns, so the addresses checked here are the addresses used: there is no second
//! lookup between check and connect. A name is refused whole if any of its addresses is
//! refused, because an answer mixing a public and an internal address is an attack (the
//! client may try the internal one first, or fall back to it).

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::policy::{AddressRefusal, Policy};

/// Why a name could not be turned into addresses we may connect to. reqwest wraps it in
/// its own error; the fetcher finds it again in the source chain to report it as is.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ResolveError {
    #[error("host {name} is not in the allowlist: refused")]
    NotAllowlisted { name: String },
    #[error("host {name} resolves to address {refusal}")]
    Refused {
        name: String,
        refusal: AddressRefusal,
    },
    #[error("host {name} could not be resolved: {reason}")]
    Lookup { name: String, reason: String },
    #[error("host {name} resolves to no address")]
    Empty { name: String },
}

/// `--resolve NAME=ADDR[,ADDR…]` entries: names answered from this table instead of DNS.
/// The addresses still go through the same checks.
pub type StaticNames = HashMap<String, Vec<IpAddr>>;

/// Parses one `--resolve NAME=ADDR[,ADDR…]` entry into a normalised name and addresses.
pub fn parse_resolve_entry(entry: &str) -> Result<(String, Vec<IpAddr>), String> {
    let (name, addrs) = entry
        .split_once('=')
        .ok_or_else(|| format!("--resolve {entry:?}: expected NAME=ADDR[,ADDR...]"))?;
    let name = crate::policy::normalize_domain(name)
        .map_err(|why| format!("--resolve {entry:?}: name {why}"))?;
    let addrs = addrs
        .split(',')
        .map(|addr| {
            // Accept `[::1]` as well as `::1`.
            let bare = addr.trim().trim_start_matches('[').trim_end_matches(']');
            bare.parse::<IpAddr>()
                .map_err(|_| format!("--resolve {entry:?}: {addr:?} is not an IP address"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((name, addrs))
}

/// Resolves with the `--resolve` table or the system resolver, and answers only with
/// addresses the policy allows.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    policy: Arc<Policy>,
    static_names: Arc<StaticNames>,
}

impl GuardedResolver {
    pub fn new(policy: Arc<Policy>, static_names: StaticNames) -> Self {
        Self {
            policy,
            static_names: Arc::new(static_names),
        }
    }

    /// The checked addresses of `name` (port 0: reqwest fills in the URL's port).
    pub async fn resolve_checked(&self, name: &str) -> Result<Vec<IpAddr>, ResolveError> {
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        // The URL was checked before the request; checking again here means no path
        // (a redirect, a future code change) reaches a name that is not allowlisted.
        if !self.policy.is_allowlisted(&name) {
            return Err(ResolveError::NotAllowlisted { name });
        }
        let mut addrs = match self.static_names.get(&name) {
            Some(addrs) => addrs.clone(),
            None => system_lookup(&name).await?,
        };
        addrs.sort_unstable();
        addrs.dedup();
        if addrs.is_empty() {
            return Err(ResolveError::Empty { name });
        }
        for ip in &addrs {
            self.policy
                .check_address(*ip)
                .map_err(|refusal| ResolveError::Refused {
                    name: name.clone(),
                    refusal,
                })?;
        }
        Ok(addrs)
    }
}

/// The system resolver (getaddrinfo on a blocking thread, via tokio): honours
/// /etc/hosts and /etc/resolv.conf, needs no environment variables.
async fn system_lookup(name: &str) -> Result<Vec<IpAddr>, ResolveError> {
    let found = tokio::net::lookup_host((name, 0))
        .await
        .map_err(|err| ResolveError::Lookup {
            name: name.to_owned(),
            reason: err.to_string(),
        })?;
    Ok(found.map(|addr| addr.ip()).collect())
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let this = self.clone();
        let name = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = this.resolve_checked(&name).await?;
            let addrs: Addrs = Box::new(addrs.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}
