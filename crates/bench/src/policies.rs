//! A realistic set of 100 Cedar policies for the policy mode (issue 11's "Numbers": policy
//! evaluation for a set of 100 policies adds at most 20 µs p99 of gateway CPU per call).
//!
//! The set is what an organisation might write for one gateway in front of three services —
//! the echo service the bench calls, a file service (`fs`) and a web fetcher (`web`): permits
//! per role, agent, tenant and user; forbids that look into the arguments (`like` on texts,
//! paths and URLs, numeric comparisons on decimals and longs, `has` on optional arguments);
//! time windows (hour, weekday, a datetime freeze); the client's address; approvals.
//!
//! About a third of the policies can apply to the benchmarked call (`echo.echo` by the bench's
//! principal): their action scope matches it, so the engine evaluates their conditions — the
//! DLP-style `like` forbids on the text run in full on every call. The rest are about other
//! tools, prompts and resources, and other principals, and only have to be scanned. Exactly
//! one permit allows the benchmarked call, and no forbid fires on it at any hour or weekday
//! (checked in the tests below and by every bench run, which fails on a refused call).
//!
//! The text is generated, deterministically, so it can be regenerated or printed
//! (`micromcp-bench --write-policies FILE`) and stays one source of truth.

use std::fmt::Write as _;

/// The services the policies name (config snippet for the gateway; `{root}` is a folder for
/// `fs`). The bench calls only `echo.echo`; `fs` and `web` sit idle so their tools exist in
/// the catalog the policies are checked against.
pub fn services(root: &str) -> String {
    format!(
        "\n[services.echo]\nbuiltin = \"echo\"\n\n[services.fs]\nbuiltin = \"fs\"\n\
         args = [\"--root\", \"{root}\"]\n\n[services.web]\nbuiltin = \"fetch\"\n\
         args = [\"--allow\", \"docs.rs\", \"--allow\", \"*.wikipedia.org\"]\n"
    )
}

/// The benchmarked caller as the policies know it (its `[[auth.tokens]]` entry's fields).
pub const AGENT: &str = "support-bot";
pub const TENANT: &str = "acme";
pub const ROLES: [&str; 2] = ["support", "staff"];

/// The `[[auth.tokens]]` lines that give the bench principal its agent, tenant and roles.
pub fn token_fields() -> String {
    let roles: Vec<String> = ROLES.iter().map(|r| format!("\"{r}\"")).collect();
    format!(
        "agent = \"{AGENT}\"\ntenant = \"{TENANT}\"\nroles = [{}]\n",
        roles.join(", ")
    )
}

/// Teams other than the bench's, with their tenant.
const TEAMS: [(&str, &str); 8] = [
    ("sales", "acme"),
    ("finance", "acme"),
    ("legal", "acme"),
    ("hr", "acme"),
    ("marketing", "globex"),
    ("engineering", "globex"),
    ("ops", "initech"),
    ("research", "initech"),
];

/// Secrets and injections nobody may send through the echo tool (DLP-style rules): each
/// one's `like` runs over the text on every call.
const DLP: [(&str, &str); 10] = [
    ("private-key", "*-----BEGIN * PRIVATE KEY-----*"),
    ("aws-access-key", "*AKIA*"),
    ("password-assignment", "*password=*"),
    ("slack-bot-token", "*xoxb-*"),
    ("github-token", "*ghp_*"),
    ("stripe-live-key", "*sk_live_*"),
    ("sql-drop", "*DROP TABLE*"),
    ("script-tag", "*<script*"),
    ("path-traversal", "*../../*"),
    ("card-number-label", "*card number:*"),
];

/// Every policy, in order: one `@id` each.
fn all() -> Vec<String> {
    let mut p = Vec::with_capacity(100);

    // --- On the benchmarked call's action (echo.echo, the call_tool group, or any action). ---
    p.push(
        r#"@id("support-echo")
@description("support agents of acme may use the echo tool")
permit (principal in Role::"support", action == Action::"echo.echo", resource)
when {
  principal has agent && ["support-bot", "triage-bot"].contains(principal.agent) &&
  principal has tenant && principal.tenant == "acme"
};"#
        .into(),
    );
    for (team, tenant) in TEAMS {
        p.push(format!(
            r#"@id("{team}-echo-office-hours")
permit (principal in Role::"{team}", action == Action::"echo.echo", resource)
when {{
  principal has tenant && principal.tenant == "{tenant}" &&
  context.time.hour >= 7 && context.time.hour < 20
}};"#
        ));
    }
    for user in ["carol", "dave", "erin", "frank", "grace"] {
        p.push(format!(
            r#"@id("{user}-echo-and-add")
permit (principal == User::"{user}", action in [Action::"echo.echo", Action::"echo.add"], resource)
when {{ context.time.weekday != "Sun" }};"#
        ));
    }
    for (name, pattern) in DLP {
        p.push(format!(
            r#"@id("dlp-echo-{name}")
forbid (principal, action == Action::"echo.echo", resource)
when {{ context.arguments.text like "{pattern}" }};"#
        ));
    }
    p.push(
        r#"@id("batch-bot-nights")
forbid (principal, action == Action::"echo.echo", resource)
when { context.time.hour < 6 && principal has agent && principal.agent == "batch-bot" };"#
            .into(),
    );
    p.push(
        r#"@id("contractors-not-on-weekends")
forbid (principal in Role::"contractor", action in Action::"call_tool", resource)
when { ["Sat", "Sun"].contains(context.time.weekday) };"#
            .into(),
    );
    p.push(
        r#"@id("change-freeze")
@description("no writes between Christmas and New Year, except by on-call")
forbid (principal, action in Action::"call_tool", resource)
when {
  !resource.read_only &&
  context.time.now >= datetime("2026-12-24T00:00:00Z") &&
  context.time.now < datetime("2027-01-02T00:00:00Z")
}
unless { principal in Role::"oncall" };"#
            .into(),
    );
    p.push(
        r#"@id("corporate-network-only")
forbid (principal, action in Action::"call_tool", resource)
when {
  context has client_ip &&
  !(context.client_ip.isLoopback() ||
    context.client_ip.isInRange(ip("10.0.0.0/8")) ||
    context.client_ip.isInRange(ip("192.168.0.0/16")))
};"#
        .into(),
    );
    p.push(
        r#"@id("tenant-required")
forbid (principal, action in Action::"call_tool", resource)
unless { principal has tenant };"#
            .into(),
    );
    p.push(
        r#"@id("bots-no-destructive-tools")
forbid (principal, action in Action::"call_tool", resource)
when {
  resource.destructive && !resource.read_only &&
  principal has agent && principal.agent like "*-bot"
}
unless { principal in Role::"automation-admin" };"#
            .into(),
    );
    p.push(
        r#"@id("auditors-read-only")
permit (principal in Role::"auditor", action in Action::"call_tool", resource)
when { resource.read_only };"#
            .into(),
    );
    p.push(
        r#"@id("suspended-users")
forbid (principal in Role::"suspended", action, resource);"#
            .into(),
    );
    p.push(
        r#"@id("revoked-clearance")
forbid (principal, action, resource)
when { principal has clearance && principal.clearance == "revoked" };"#
            .into(),
    );
    p.push(
        r#"@id("certificates-for-services-only")
forbid (principal, action in Action::"call_tool", resource)
when { principal.auth_method == "certificate" }
unless { principal in Role::"service" };"#
            .into(),
    );

    // --- Other echo tools. ---
    p.push(
        r#"@id("finance-add-small")
permit (principal in Role::"finance", action == Action::"echo.add", resource)
when {
  context.arguments.a.lessThanOrEqual(decimal("10000.0")) &&
  context.arguments.b.lessThanOrEqual(decimal("10000.0"))
};"#
        .into(),
    );
    p.push(
        r#"@id("finance-add-large")
@approval("required")
permit (principal in Role::"finance", action == Action::"echo.add", resource)
when {
  context.arguments.a.greaterThan(decimal("10000.0")) ||
  context.arguments.b.greaterThan(decimal("10000.0"))
};"#
        .into(),
    );
    p.push(
        r#"@id("add-no-negatives")
forbid (principal, action == Action::"echo.add", resource)
when {
  context.arguments.a.lessThan(decimal("0.0")) || context.arguments.b.lessThan(decimal("0.0"))
};"#
        .into(),
    );
    for (team, tenant) in &TEAMS[..4] {
        p.push(format!(
            r#"@id("{team}-add")
permit (principal in Role::"{team}", action == Action::"echo.add", resource)
when {{
  principal has tenant && principal.tenant == "{tenant}" &&
  context.arguments.a.lessThanOrEqual(decimal("1000.0"))
}};"#
        ));
    }
    p.push(
        r#"@id("ops-slow-short")
permit (principal in Role::"ops", action == Action::"echo.slow", resource)
when { context.arguments.seconds.lessThanOrEqual(decimal("30.0")) };"#
            .into(),
    );
    p.push(
        r#"@id("ops-slow-long")
@approval("required")
permit (principal in Role::"ops", action == Action::"echo.slow", resource)
when { context.arguments.seconds.greaterThan(decimal("30.0")) };"#
            .into(),
    );
    p.push(
        r#"@id("slow-few-steps")
forbid (principal, action == Action::"echo.slow", resource)
when { context.arguments has steps && context.arguments.steps > 100 };"#
            .into(),
    );
    p.push(
        r#"@id("engineering-fail")
permit (principal in Role::"engineering", action == Action::"echo.fail", resource)
when { !(context.arguments.message like "*stack trace*") };"#
            .into(),
    );
    p.push(
        r#"@id("exit-admins-only")
permit (principal in Role::"automation-admin", action == Action::"echo.exit", resource)
when { context.arguments has code && context.arguments.code >= 0 && context.arguments.code < 128 };"#
            .into(),
    );
    p.push(
        r#"@id("exit-never-by-bots")
forbid (principal, action == Action::"echo.exit", resource)
when { principal has agent };"#
            .into(),
    );
    p.push(
        r#"@id("confirm-humans")
permit (principal in Role::"staff", action == Action::"echo.confirm", resource)
unless { principal has agent };"#
            .into(),
    );
    p.push(
        r#"@id("confirm-no-secrets")
forbid (principal, action == Action::"echo.confirm", resource)
when { context.arguments.question like "*password*" };"#
            .into(),
    );
    p.push(
        r#"@id("now-for-staff")
permit (principal in Role::"staff", action == Action::"echo.now", resource);"#
            .into(),
    );
    p.push(
        r#"@id("env-never")
forbid (principal, action == Action::"echo.env", resource)
unless { principal in Role::"automation-admin" && principal.auth_method == "certificate" };"#
            .into(),
    );

    // --- Files. ---
    p.push(
        r#"@id("support-read-public")
permit (principal in Role::"support", action == Action::"fs.read_file", resource)
when { context.arguments.path like "public/*" };"#
            .into(),
    );
    for (team, _) in TEAMS {
        p.push(format!(
            r#"@id("{team}-read-own-folder")
permit (principal in Role::"{team}", action in [Action::"fs.read_file", Action::"fs.list_directory", Action::"fs.stat"], resource)
when {{ context.arguments.path like "teams/{team}/*" || context.arguments.path == "teams/{team}" }};"#
        ));
    }
    for (name, pattern) in [
        ("dotenv", "*.env*"),
        ("secrets-folder", "*secret*"),
        ("keys", "*.pem"),
        ("hr-records", "teams/hr/records/*"),
    ] {
        p.push(format!(
            r#"@id("fs-deny-{name}")
forbid (principal, action in [Action::"fs.read_file", Action::"fs.stat", Action::"fs.list_directory"], resource)
when {{ context.arguments.path like "{pattern}" }}
unless {{ principal in Role::"security" }};"#
        ));
    }
    p.push(
        r#"@id("fs-large-reads-need-approval")
@approval("required")
permit (principal in Role::"research", action == Action::"fs.read_file", resource)
when { context.arguments has length && context.arguments.length > 1048576 };"#
            .into(),
    );
    p.push(
        r#"@id("fs-read-offsets")
forbid (principal, action == Action::"fs.read_file", resource)
when { context.arguments has offset && context.arguments.offset < 0 };"#
            .into(),
    );
    p.push(
        r#"@id("support-list-public")
permit (principal in Role::"support", action == Action::"fs.list_directory", resource)
when { context.arguments.path == "public" || context.arguments.path like "public/*" };"#
            .into(),
    );
    p.push(
        r#"@id("staff-find-files")
permit (principal in Role::"staff", action == Action::"fs.find_files", resource)
unless { context.arguments has max_results && context.arguments.max_results > 500 };"#
            .into(),
    );
    p.push(
        r#"@id("find-no-wide-patterns")
forbid (principal, action == Action::"fs.find_files", resource)
when { context.arguments.pattern == "*" || context.arguments.pattern == "**" }
unless { principal in Role::"ops" };"#
            .into(),
    );
    p.push(
        r#"@id("staff-search")
permit (principal in Role::"staff", action == Action::"fs.search_files", resource)
unless { context.arguments has max_matches && context.arguments.max_matches > 100 };"#
            .into(),
    );
    p.push(
        r#"@id("bots-no-regex-search")
forbid (principal, action == Action::"fs.search_files", resource)
when {
  principal has agent && context.arguments has regex && context.arguments.regex
};"#
        .into(),
    );
    p.push(
        r#"@id("search-not-for-secrets")
forbid (principal, action == Action::"fs.search_files", resource)
when {
  context.arguments.query like "*password*" || context.arguments.query like "*BEGIN*KEY*"
};"#
        .into(),
    );
    p.push(
        r#"@id("search-in-public-for-guests")
forbid (principal in Role::"guest", action == Action::"fs.search_files", resource)
unless { context.arguments has path && context.arguments.path like "public*" };"#
            .into(),
    );

    // --- The web. ---
    for (name, prefix) in [
        ("docs-rs", "https://docs.rs/*"),
        ("wikipedia", "https://*.wikipedia.org/*"),
    ] {
        p.push(format!(
            r#"@id("staff-fetch-{name}")
permit (principal in Role::"staff", action == Action::"web.fetch_text", resource)
when {{ context.arguments.url like "{prefix}" }};"#
        ));
    }
    for (team, _) in &TEAMS[4..] {
        p.push(format!(
            r#"@id("{team}-fetch-vendor-docs")
permit (principal in Role::"{team}", action == Action::"web.fetch_text", resource)
when {{ context.arguments.url like "https://docs.{team}-vendor.example/*" }};"#
        ));
    }
    for (name, pattern) in [
        ("plain-http", "http://*"),
        ("metadata", "*169.254.169.254*"),
        ("credentials-in-url", "https://*:*@*"),
        ("query-tokens", "*access_token=*"),
    ] {
        p.push(format!(
            r#"@id("fetch-deny-{name}")
forbid (principal, action == Action::"web.fetch_text", resource)
when {{ context.arguments.url like "{pattern}" }};"#
        ));
    }
    p.push(
        r#"@id("fetch-big-pages-need-approval")
@approval("required")
permit (principal in Role::"research", action == Action::"web.fetch_text", resource)
when { context.arguments has max_bytes && context.arguments.max_bytes > 1000000 };"#
            .into(),
    );
    p.push(
        r#"@id("fetch-limit-bots")
forbid (principal, action == Action::"web.fetch_text", resource)
when {
  principal has agent && context.arguments has max_bytes && context.arguments.max_bytes > 262144
};"#
        .into(),
    );

    // --- Prompts and resources. ---
    p.push(
        r#"@id("staff-prompts")
permit (principal in Role::"staff", action == Action::"get_prompt", resource)
when { resource.service == "echo" };"#
            .into(),
    );
    p.push(
        r#"@id("guests-no-prompts")
forbid (principal in Role::"guest", action == Action::"get_prompt", resource);"#
            .into(),
    );
    p.push(
        r#"@id("staff-echo-resources")
permit (principal in Role::"staff", action == Action::"read_resource", resource)
when { resource.uri like "echo://*" };"#
            .into(),
    );
    p.push(
        r#"@id("support-public-files-as-resources")
permit (principal in Role::"support", action == Action::"read_resource", resource)
when { resource.service == "fs" && resource.uri like "file:///public/*" };"#
            .into(),
    );
    p.push(
        r#"@id("no-secret-resources")
forbid (principal, action == Action::"read_resource", resource)
when { resource.uri like "*secret*" || resource.uri like "*.env*" };"#
            .into(),
    );

    // --- More for other principals and tools. ---
    p.push(
        r#"@id("fs-acme-only")
forbid (principal, action in [Action::"fs.read_file", Action::"fs.list_directory", Action::"fs.stat", Action::"fs.find_files", Action::"fs.search_files"], resource)
when { principal has tenant && principal.tenant != "acme" };"#
            .into(),
    );
    for (agent, tool) in [
        ("triage-bot", "fs.read_file"),
        ("research-bot", "web.fetch_text"),
        ("sales-bot", "fs.find_files"),
        ("hr-bot", "fs.stat"),
    ] {
        p.push(format!(
            r#"@id("agent-{agent}-{tool}")
permit (principal, action == Action::"{tool}", resource)
when {{ principal has agent && principal.agent == "{agent}" && principal has tenant && principal.tenant == "acme" }};"#
        ));
    }
    p.push(
        r#"@id("hr-records-redacted")
@redact("pii")
permit (principal in Role::"hr", action == Action::"fs.read_file", resource)
when { context.arguments.path like "teams/hr/*" };"#
            .into(),
    );
    p.push(
        r#"@id("bots-fetch-rate-limited")
@rate("fetch-per-agent")
permit (principal, action == Action::"web.fetch_text", resource)
when { principal has agent && principal.agent like "*-bot" && context.arguments.url like "https://docs.rs/*" };"#
            .into(),
    );
    p.push(
        r#"@id("research-prompts")
permit (principal in Role::"research", action == Action::"get_prompt", resource);"#
            .into(),
    );
    p.push(
        r#"@id("engineering-all-resources")
permit (principal in Role::"engineering", action == Action::"read_resource", resource)
when { principal has tenant && principal.tenant == "globex" };"#
            .into(),
    );
    p.push(
        r#"@id("interns-office-hours")
permit (principal in Role::"intern", action in [Action::"fs.read_file", Action::"fs.list_directory"], resource)
when {
  context.arguments.path like "public/*" &&
  context.time.hour >= 9 && context.time.hour < 17 &&
  !(["Sat", "Sun"].contains(context.time.weekday))
};"#
        .into(),
    );
    p
}

/// The 100 policies as one `.cedar` file.
pub fn text() -> String {
    let mut s = String::from(
        "// 100 policies generated by micromcp-bench (crates/bench/src/policies.rs) for the\n\
         // policy mode; services echo, fs and web.\n",
    );
    for policy in all() {
        let _ = write!(s, "\n{policy}\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn there_are_100_and_about_a_third_can_apply_to_the_benchmarked_call() {
        let policies = all();
        assert_eq!(policies.len(), 100);
        let applies = policies
            .iter()
            .filter(|p| {
                p.contains("Action::\"echo.echo\"")
                    || p.contains("action in Action::\"call_tool\"")
                    || p.contains("action, resource")
            })
            .count();
        assert!((30..=40).contains(&applies), "{applies} apply to echo.echo");
    }
}
