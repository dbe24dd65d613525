//! The engine end to end: grants and scope rules compiled to Cedar, operator policies on
//! arguments, forbid over permit, evaluation errors, lists, obligations, reloads.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use micromcp_auth::{AuthMethod, Principal};
use micromcp_config::{Grant, ScopeRule};
use serde_json::{Map, Value, json};

use super::*;

fn principal(user: &str, agent: Option<&str>) -> Principal {
    Principal::named(user, agent, AuthMethod::ApiToken)
}

fn grant(principal: &str, agent: Option<&str>, tools: &[&str]) -> Grant {
    Grant {
        principal: Some(principal.into()),
        agent: agent.map(Into::into),
        issuer: None,
        tenant: None,
        roles: vec![],
        scopes: vec![],
        tools: tools.iter().map(|s| s.to_string()).collect(),
        prompts: vec![],
        resources: vec![],
    }
}

/// A Saturday, 10:00 UTC.
fn saturday() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_795_860_000)
}

fn context_at(now: SystemTime) -> RequestContext<'static> {
    RequestContext {
        transport: "http",
        protocol_version: "2025-11-25",
        client_ip: Some("127.0.0.1".parse().expect("ip")),
        session: None,
        now,
    }
}

fn context() -> RequestContext<'static> {
    // A Wednesday.
    context_at(UNIX_EPOCH + Duration::from_secs(1_795_600_800))
}

fn catalog() -> Vec<(&'static str, Vec<ToolEntry>)> {
    let tool = |name: &str, schema: Value, read_only: bool| ToolEntry {
        name: name.into(),
        input_schema: schema,
        hints: ToolHints {
            read_only,
            ..ToolHints::default()
        },
    };
    vec![
        (
            "fs",
            vec![
                tool(
                    "read_file",
                    json!({"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}),
                    true,
                ),
                tool(
                    "write_file",
                    json!({"type": "object", "properties": {"path": {"type": "string"}, "text": {"type": "string"}}}),
                    false,
                ),
            ],
        ),
        (
            "shop",
            vec![tool(
                "refund",
                json!({"type": "object", "properties": {"order": {"type": "string"}, "amount": {"type": "number"}}, "required": ["order", "amount"]}),
                false,
            )],
        ),
        ("echo", vec![tool("add", json!({"type": "object"}), true)]),
    ]
}

fn engine_with(
    grants: Vec<Grant>,
    scopes: Vec<ScopeRule>,
    policies: &str,
) -> (PolicyEngine, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut files = Vec::new();
    if !policies.is_empty() {
        let file = dir.path().join("policies.cedar");
        std::fs::write(&file, policies).expect("write");
        files.push(file);
    }
    let engine = PolicyEngine::from_parts(".".into(), grants, scopes, files).expect("loads");
    for (service, tools) in catalog() {
        engine.set_catalog(service, tools);
    }
    engine
        .check()
        .expect("policies validate against the catalog");
    (engine, dir)
}

fn call(
    engine: &PolicyEngine,
    p: &Principal,
    service: &str,
    name: &str,
    args: Value,
) -> Result<Decision, Refused> {
    let args: Map<String, Value> = args.as_object().cloned().unwrap_or_default();
    engine.authorize(
        p,
        Action {
            kind: Kind::Tool,
            service,
            name,
            arguments: Some(&args),
        },
        &context(),
    )
}

fn tool<'a>(name: &'a str) -> Action<'a> {
    Action {
        kind: Kind::Tool,
        service: "fs",
        name,
        arguments: None,
    }
}

const SUPPORT: &str = r#"
@id("support-read-public")
permit (principal in Role::"support", action == Action::"fs.read_file", resource)
when { context.arguments.path like "/public/*" };

@id("no-dotdot")
forbid (principal, action == Action::"fs.read_file", resource)
when { context.arguments.path like "*..*" };

@id("refund-small")
permit (principal in Role::"support", action == Action::"shop.refund", resource)
when { context.arguments.amount.lessThanOrEqual(decimal("100.0")) };

@id("refund-large")
@approval("required")
permit (principal in Role::"support", action == Action::"shop.refund", resource)
when { context.arguments.amount.greaterThan(decimal("100.0")) };

@id("no-weekend-refunds")
forbid (principal, action == Action::"shop.refund", resource)
when { ["Sat", "Sun"].contains(context.time.weekday) };
"#;

fn support(user: &str) -> Principal {
    let mut p = principal(user, Some("support-bot"));
    p.roles = vec!["support".into()];
    p
}

#[test]
fn policies_decide_on_arguments_and_name_themselves() {
    let (engine, _dir) = engine_with(vec![], vec![], SUPPORT);
    let alice = support("alice");
    let allowed = call(
        &engine,
        &alice,
        "fs",
        "read_file",
        json!({"path": "/public/a.txt"}),
    )
    .expect("typed");
    assert!(allowed.allowed);
    assert_eq!(allowed.policies, ["support-read-public"]);
    let outside = call(
        &engine,
        &alice,
        "fs",
        "read_file",
        json!({"path": "/etc/passwd"}),
    )
    .expect("typed");
    assert_eq!(
        (outside.allowed, outside.rule.as_str()),
        (false, "default-deny")
    );
    let forbidden = call(
        &engine,
        &alice,
        "fs",
        "read_file",
        json!({"path": "/public/../etc/passwd"}),
    )
    .expect("typed");
    assert_eq!(
        (forbidden.allowed, forbidden.policies.clone()),
        (false, vec!["no-dotdot".to_owned()]),
        "forbid wins over a matching permit"
    );
    let bob = principal("bob", None);
    assert!(
        !call(
            &engine,
            &bob,
            "fs",
            "read_file",
            json!({"path": "/public/a.txt"})
        )
        .expect("typed")
        .allowed,
        "not in the role"
    );
}

#[test]
fn approval_is_an_obligation_of_the_permit_that_allowed() {
    let (engine, _dir) = engine_with(vec![], vec![], SUPPORT);
    let alice = support("alice");
    let small = call(
        &engine,
        &alice,
        "shop",
        "refund",
        json!({"order": "A1", "amount": 40}),
    )
    .expect("typed");
    assert!(small.allowed && !small.obligations.approval);
    let large = call(
        &engine,
        &alice,
        "shop",
        "refund",
        json!({"order": "A1", "amount": 100.01}),
    )
    .expect("typed");
    assert!(large.allowed && large.obligations.approval, "{large:?}");
    assert_eq!(large.policies, ["refund-large"]);
    let args: Map<String, Value> = json!({"order": "A1", "amount": 5})
        .as_object()
        .cloned()
        .expect("object");
    let weekend = engine
        .authorize(
            &alice,
            Action {
                kind: Kind::Tool,
                service: "shop",
                name: "refund",
                arguments: Some(&args),
            },
            &context_at(saturday()),
        )
        .expect("typed");
    assert_eq!(
        (weekend.allowed, weekend.policies),
        (false, vec!["no-weekend-refunds".to_owned()])
    );
}

#[test]
fn arguments_that_do_not_fit_are_refused_before_policy() {
    let (engine, _dir) = engine_with(vec![], vec![], SUPPORT);
    let alice = support("alice");
    let refused = call(
        &engine,
        &alice,
        "shop",
        "refund",
        json!({"order": "A1", "amount": "5"}),
    );
    assert_eq!(
        refused.expect_err("refused").to_string(),
        "arguments.amount: must be a number"
    );
    let smuggled = call(
        &engine,
        &alice,
        "fs",
        "read_file",
        json!({"path": "/public/a", "Path": "/etc/shadow"}),
    );
    assert!(matches!(smuggled, Err(Refused::Arguments(_))));
    assert_eq!(
        call(&engine, &alice, "fs", "unknown_tool", json!({})),
        Err(Refused::NotInCatalog)
    );
}

#[test]
fn no_policy_denies_and_evaluation_errors_deny() {
    let (engine, _dir) = engine_with(vec![], vec![], "");
    let d = call(
        &engine,
        &support("alice"),
        "fs",
        "read_file",
        json!({"path": "/public/a"}),
    )
    .expect("typed");
    assert_eq!((d.allowed, d.rule.as_str()), (false, "default-deny"));
    // Validates (decimal arithmetic is typed), but overflows at run time.
    let overflow = r#"
@id("allow-all-reads")
permit (principal, action == Action::"fs.read_file", resource);
@id("overflowing-forbid")
forbid (principal, action == Action::"shop.refund", resource)
when { context.arguments.order == "x" && 9223372036854775807 + 1 > 0 };
@id("refunds")
permit (principal, action == Action::"shop.refund", resource);
"#;
    let (engine, _dir) = engine_with(vec![], vec![], overflow);
    let alice = principal("alice", None);
    let d = call(
        &engine,
        &alice,
        "shop",
        "refund",
        json!({"order": "x", "amount": 1}),
    )
    .expect("typed");
    assert!(
        !d.allowed,
        "a forbid that errors must not let the call through: {d:?}"
    );
    assert_eq!(d.rule, "evaluation-error");
    assert!(!d.errors.is_empty());
    assert!(
        call(
            &engine,
            &alice,
            "shop",
            "refund",
            json!({"order": "y", "amount": 1})
        )
        .expect("typed")
        .allowed
    );
}

#[test]
fn lists_show_what_some_arguments_allow() {
    let (engine, _dir) = engine_with(vec![], vec![], SUPPORT);
    let alice = support("alice");
    let listed = |a: Action<'_>, ctx: &RequestContext<'_>| engine.may_list(&alice, a, None, ctx);
    assert!(
        listed(tool("read_file"), &context()),
        "permitted only under /public, still listed"
    );
    assert!(!listed(tool("write_file"), &context()), "no permit at all");
    let refund = Action {
        kind: Kind::Tool,
        service: "shop",
        name: "refund",
        arguments: None,
    };
    assert!(listed(refund, &context()));
    assert!(
        !listed(refund, &context_at(saturday())),
        "a forbid that holds whatever the arguments hides it"
    );
    assert!(!engine.may_list(&principal("bob", None), tool("read_file"), None, &context()));
}

#[test]
fn lists_hide_what_a_policy_error_denies_whatever_the_arguments() {
    let overflow = r#"
@id("reads") permit (principal, action in [Action::"fs.read_file", Action::"shop.refund"], resource);
@id("always-overflows")
forbid (principal, action == Action::"fs.read_file", resource)
when { 9223372036854775807 + 1 > 0 };
@id("overflows-for-one-order")
forbid (principal, action == Action::"shop.refund", resource)
when { context.arguments.order == "x" && 9223372036854775807 + 1 > 0 };
"#;
    let (engine, _dir) = engine_with(vec![], vec![], overflow);
    let alice = principal("alice", None);
    let read = call(&engine, &alice, "fs", "read_file", json!({"path": "/a"})).expect("typed");
    assert_eq!(read.rule, "evaluation-error");
    assert!(
        !engine.may_list(&alice, tool("read_file"), None, &context()),
        "no call can succeed, so it is not listed"
    );
    let refund = Action {
        kind: Kind::Tool,
        service: "shop",
        name: "refund",
        arguments: None,
    };
    assert!(
        engine.may_list(&alice, refund, None, &context()),
        "errors only for some arguments: other arguments are allowed"
    );
}

#[test]
fn grants_compile_to_cedar_with_the_same_meaning() {
    let mut by_role = grant("x", None, &["fs.*"]);
    by_role.principal = None;
    by_role.issuer = Some("https://idp.example/".into());
    by_role.roles = vec!["reader".into(), "admin".into()];
    by_role.tenant = Some("acme".into());
    by_role.scopes = vec!["mcp".into()];
    let (engine, _dir) = engine_with(vec![by_role], vec![], "");
    let mut p = principal("anyone", None);
    p.issuer = Some("https://idp.example".into());
    p.roles = vec!["reader".into()];
    p.tenant = Some("acme".into());
    p.scopes = vec!["mcp".into(), "other".into()];
    let read =
        |p: &Principal| call(&engine, p, "fs", "read_file", json!({"path": "/x"})).expect("typed");
    assert_eq!(read(&p).policies, ["grants[0]"]);
    for change in [
        |p: &mut Principal| p.issuer = Some("https://evil.example".into()),
        |p: &mut Principal| p.issuer = None,
        |p: &mut Principal| p.roles = vec!["writer".into()],
        |p: &mut Principal| p.tenant = Some("other".into()),
        |p: &mut Principal| p.tenant = None,
        |p: &mut Principal| p.scopes = vec!["other".into()],
    ] {
        let mut q = p.clone();
        change(&mut q);
        assert!(!read(&q).allowed, "{q:?}");
    }
}

#[test]
fn grant_rules_agents_kinds_and_default_deny() {
    let (engine, _dir) = engine_with(
        vec![
            grant("bob", None, &["shop.*"]),
            grant("alice", Some("bot"), &["echo.*"]),
        ],
        vec![],
        "",
    );
    let add = |u, ag| call(&engine, &principal(u, ag), "echo", "add", json!({})).expect("typed");
    assert_eq!(add("alice", Some("bot")).rule, "grants[1]");
    assert_eq!(add("alice", Some("other")).rule, "default-deny");
    assert!(!add("alice", None).allowed);
    assert!(!add("bob", None).allowed);
    let prompt = engine
        .authorize(
            &principal("alice", Some("bot")),
            Action {
                kind: Kind::Prompt,
                service: "echo",
                name: "add",
                arguments: None,
            },
            &context(),
        )
        .expect("no arguments");
    assert!(!prompt.allowed, "a tool grant does not grant prompts");
}

#[test]
fn scope_rules_refuse_what_is_granted_but_lacks_a_scope() {
    let rules = vec![ScopeRule {
        scopes: vec!["files:write".into(), "files:read".into()],
        tools: vec!["fs.write_*".into()],
        prompts: vec![],
        resources: vec![],
    }];
    let (engine, _dir) = engine_with(vec![grant("alice", None, &["fs.*"])], rules, "");
    let mut alice = principal("alice", None);
    alice.scopes = vec!["files:read".into()];
    let write =
        |p: &Principal| call(&engine, p, "fs", "write_file", json!({"path": "/x"})).expect("typed");
    assert!(
        call(&engine, &alice, "fs", "read_file", json!({"path": "/x"}))
            .expect("typed")
            .allowed
    );
    let refused = write(&alice);
    assert_eq!(
        (refused.rule.as_str(), refused.missing_scopes.as_deref()),
        ("scopes[0]", Some("files:write"))
    );
    alice.scopes.push("files:write".into());
    assert!(write(&alice).allowed);
    let not_granted = write(&principal("bob", None));
    assert_eq!(
        (not_granted.rule.as_str(), not_granted.missing_scopes),
        ("scopes[0]", None),
        "nothing granted: no hint about scopes"
    );
}

#[test]
fn hostile_names_cannot_break_out_of_compiled_grants() {
    let sneaky = grant("alice\" || true || \"", None, &["fs.read_*"]);
    let (engine, _dir) = engine_with(vec![sneaky], vec![], "");
    assert!(
        !call(
            &engine,
            &principal("mallory", None),
            "fs",
            "read_file",
            json!({"path": "/"})
        )
        .expect("typed")
        .allowed
    );
    assert!(
        call(
            &engine,
            &principal("alice\" || true || \"", None),
            "fs",
            "read_file",
            json!({"path": "/"})
        )
        .expect("typed")
        .allowed
    );
}

#[test]
fn may_use_any_is_per_principal_agent_kind_and_service() {
    let mut docs = grant("alice", None, &[]);
    docs.resources = vec!["docs.file:///public/*".into()];
    let (engine, _dir) = engine_with(
        vec![
            grant("alice", Some("bot"), &["echo.add"]),
            grant("bob", None, &["time.*"]),
            docs,
        ],
        vec![],
        "",
    );
    let bot = principal("alice", Some("bot"));
    assert!(engine.may_use_any(&bot, Kind::Tool, "echo"));
    assert!(!engine.may_use_any(&bot, Kind::Tool, "time"), "bob's grant");
    assert!(
        !engine.may_use_any(&bot, Kind::Prompt, "echo"),
        "tools only"
    );
    assert!(!engine.may_use_any(&principal("alice", Some("other")), Kind::Tool, "echo"));
    assert!(
        engine.may_use_any(&bot, Kind::Resource, "docs"),
        "agent-less grant"
    );
    assert!(
        !engine.may_use_any(&bot, Kind::Resource, "doc"),
        "service names are whole"
    );
    let cases = [
        ("echo.*", "echo", true),
        ("echo*", "echoes", true),
        ("ec*o.add", "echo", true),
        ("echo", "echo", false),
        ("echoes.*", "echo", false),
    ];
    for (pattern, service, expected) in cases {
        assert_eq!(
            may_match_with_prefix(pattern, &format!("{service}.")),
            expected,
            "{pattern:?} on {service:?}"
        );
    }
}

#[test]
fn bad_policy_files_are_refused_with_every_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.cedar");
    let load = |text: &str| {
        std::fs::write(&file, text).expect("write");
        PolicyEngine::from_parts(".".into(), vec![], vec![], vec![file.clone()]).map(|_| ())
    };
    let errors = load("permit (principal, action, resource);\n@id(\"x\") @colour(\"red\") permit (principal, action, resource);\n@id(\"x\") forbid (principal, action, resource);\n@id(\"y\") @approval(\"required\") forbid (principal, action, resource);\n@id(\"grants[0]\") permit (principal, action, resource);").expect_err("invalid");
    let all = errors.join("\n");
    for expected in [
        "needs @id",
        "unknown annotation @colour",
        "used by another policy",
        "@approval belongs on a permit",
        "reserved",
    ] {
        assert!(all.contains(expected), "{expected:?} in {all}");
    }
    let syntax =
        load("permit (principal, action, resource)\nwhen { context.x ==  };").expect_err("syntax");
    assert!(syntax[0].contains("(line 2)"), "{syntax:?}");
}

#[test]
fn the_schema_catches_unknown_tools_arguments_and_type_errors() {
    let check = |text: &str| {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("p.cedar");
        std::fs::write(&file, text).expect("write");
        let engine =
            PolicyEngine::from_parts(".".into(), vec![], vec![], vec![file]).expect("parses");
        for (service, tools) in catalog() {
            engine.set_catalog(service, tools);
        }
        engine.check().map_err(|e| e.join("\n"))
    };
    assert!(check("@id(\"a\") permit (principal, action == Action::\"fs.read_file\", resource) when { context.arguments.path like \"/p/*\" };").is_ok());
    let unknown_tool =
        check("@id(\"a\") permit (principal, action == Action::\"fs.delete_all\", resource);")
            .expect_err("unknown action");
    assert!(unknown_tool.contains("fs.delete_all"), "{unknown_tool}");
    let unknown_arg = check("@id(\"a\") permit (principal, action == Action::\"fs.read_file\", resource) when { context.arguments.pth == \"x\" };").expect_err("unknown argument");
    assert!(unknown_arg.contains("pth"), "{unknown_arg}");
    let type_error = check("@id(\"a\") permit (principal, action == Action::\"shop.refund\", resource) when { context.arguments.order > 100 };").expect_err("string compared with a number");
    assert!(type_error.contains("a"), "{type_error}");
}

#[test]
fn reload_swaps_valid_sets_and_keeps_the_old_one_on_errors() {
    let (engine, dir) = engine_with(vec![], vec![], SUPPORT);
    let alice = support("alice");
    let file: PathBuf = dir.path().join("policies.cedar");
    let before = engine.digest();
    std::fs::write(
        &file,
        "@id(\"broken\") permit (principal, action == Action::\"fs.nope\", resource);",
    )
    .expect("write");
    assert!(engine.reload().is_err());
    assert_eq!(engine.digest(), before, "the old set stays");
    assert!(
        call(
            &engine,
            &alice,
            "fs",
            "read_file",
            json!({"path": "/public/a"})
        )
        .expect("typed")
        .allowed
    );
    std::fs::write(&file, "@id(\"only-etc\") permit (principal, action == Action::\"fs.read_file\", resource) when { context.arguments.path like \"/etc/*\" };").expect("write");
    let loaded = engine.reload().expect("valid");
    assert_eq!(loaded.policies, 1);
    assert_ne!(engine.digest(), before);
    assert!(
        !call(
            &engine,
            &alice,
            "fs",
            "read_file",
            json!({"path": "/public/a"})
        )
        .expect("typed")
        .allowed
    );
    assert_eq!(
        call(
            &engine,
            &alice,
            "fs",
            "read_file",
            json!({"path": "/etc/a"})
        )
        .expect("typed")
        .policies,
        ["only-etc"]
    );
}

#[test]
fn tools_outside_the_catalog_are_listed_by_what_grants_say() {
    let (engine, _dir) = engine_with(vec![grant("alice", None, &["broken.*"])], vec![], "");
    let alice = principal("alice", None);
    let action = Action {
        kind: Kind::Tool,
        service: "broken",
        name: "anything",
        arguments: None,
    };
    assert!(engine.may_list(&alice, action, None, &context()));
    assert!(!engine.may_list(&principal("bob", None), action, None, &context()));
}

/// Policies with every kind of scope the slices reason about (actions named alone, in lists,
/// the `call_tool` group, any action; principals by user, `in User`, by role, `is … in`), for
/// [`slices_decide_as_the_whole_policy_set`].
const SCOPES: &str = r#"
@id("ops-any-tool")
permit (principal in Role::"ops", action in Action::"call_tool", resource)
when { resource.read_only || context.time.weekday != "Sat" };

@id("contractors-never-on-weekends")
forbid (principal in Role::"contractor", action, resource)
when { ["Sat", "Sun"].contains(context.time.weekday) };

@id("carol-files")
permit (principal == User::"carol", action in [Action::"fs.read_file", Action::"fs.write_file"], resource)
unless { context.arguments has path && context.arguments.path like "/etc/*" };

@id("dave-in-himself")
permit (principal in User::"dave", action == Action::"echo.add", resource);

@id("typed-ops-refunds")
permit (principal is User in Role::"ops", action == Action::"shop.refund", resource)
when { context.arguments.amount.lessThan(decimal("500.0")) };

@id("prompts-for-support")
permit (principal in Role::"support", action == Action::"get_prompt", resource)
when { resource.service == "echo" };

@id("resources-in-list")
permit (principal, action in [Action::"read_resource", Action::"fs.read_file"], resource)
when { principal has agent && principal.agent == "reader-bot" };

@id("no-writes-for-bots")
forbid (principal, action in Action::"call_tool", resource)
when { !resource.read_only && principal has agent };

@id("refund-overflow")
forbid (principal in Role::"ops", action == Action::"shop.refund", resource)
when { context.arguments.order == "boom" && 9223372036854775807 + 1 > 0 };
"#;

#[test]
fn slices_decide_as_the_whole_policy_set() {
    let mut ops_grant = grant("x", None, &["fs.read_*", "shop.*"]);
    ops_grant.principal = None;
    ops_grant.roles = vec!["ops".into()];
    let rules = vec![ScopeRule {
        scopes: vec!["files:write".into()],
        tools: vec!["fs.write_*".into()],
        prompts: vec![],
        resources: vec![],
    }];
    let grants = vec![grant("bob", None, &["fs.*", "echo.*"]), ops_grant];
    let (engine, _dir) = engine_with(grants, rules, &format!("{SUPPORT}{SCOPES}"));

    let with = |user: &str, agent: Option<&str>, roles: &[&str], scopes: &[&str]| {
        let mut p = principal(user, agent);
        p.roles = roles.iter().map(|r| (*r).to_owned()).collect();
        p.scopes = scopes.iter().map(|s| (*s).to_owned()).collect();
        p
    };
    let principals = [
        support("alice"),
        with("bob", None, &[], &[]),
        with("bob", None, &[], &["files:write"]),
        with("carol", None, &["ops"], &[]),
        with("dave", Some("reader-bot"), &["support", "contractor"], &[]),
        with(
            "erin",
            Some("reader-bot"),
            &["ops", "contractor", "ops"],
            &[],
        ),
        with("frank", None, &[], &[]),
    ];
    let calls: Vec<(Kind, &str, &str, Value)> = vec![
        (Kind::Tool, "fs", "read_file", json!({"path": "/public/a"})),
        (
            Kind::Tool,
            "fs",
            "read_file",
            json!({"path": "/etc/passwd"}),
        ),
        (
            Kind::Tool,
            "fs",
            "read_file",
            json!({"path": "/public/../x"}),
        ),
        (
            Kind::Tool,
            "fs",
            "write_file",
            json!({"path": "/tmp/x", "text": "y"}),
        ),
        (
            Kind::Tool,
            "shop",
            "refund",
            json!({"order": "A1", "amount": 40}),
        ),
        (
            Kind::Tool,
            "shop",
            "refund",
            json!({"order": "A2", "amount": 700}),
        ),
        (
            Kind::Tool,
            "shop",
            "refund",
            json!({"order": "boom", "amount": 1}),
        ),
        (Kind::Tool, "echo", "add", json!({})),
        (Kind::Prompt, "echo", "greet", Value::Null),
        (Kind::Prompt, "fs", "summarize", Value::Null),
        (Kind::Resource, "fs", "file:///public/a", Value::Null),
    ];
    let mut outcomes = HashSet::new();
    for now in [context(), context_at(saturday())] {
        for p in &principals {
            for (kind, service, name, args) in &calls {
                let args = args.as_object().cloned();
                let action = Action {
                    kind: *kind,
                    service,
                    name,
                    arguments: args.as_ref(),
                };
                let sliced = engine.authorize(p, action, &now);
                let listed = engine.may_list(p, action, None, &now);
                engine.set_unsliced(true);
                let whole = engine.authorize(p, action, &now);
                let whole_listed = engine.may_list(p, action, None, &now);
                engine.set_unsliced(false);
                assert_eq!(sliced, whole, "{p:?} {kind:?} {service}/{name}");
                assert_eq!(
                    listed, whole_listed,
                    "list: {p:?} {kind:?} {service}/{name}"
                );
                let d = sliced.expect("typed");
                outcomes.insert((d.allowed, d.rule.clone(), d.missing_scopes.is_some()));
            }
        }
    }
    // The matrix reaches every kind of outcome, so the comparison means something.
    for (what, seen) in [
        ("an allow", outcomes.iter().any(|o| o.0)),
        (
            "a default deny",
            outcomes.iter().any(|o| o.1 == "default-deny"),
        ),
        (
            "a forbid",
            outcomes.iter().any(|o| !o.0 && o.1 == "no-dotdot"),
        ),
        (
            "an evaluation error",
            outcomes.iter().any(|o| o.1 == "evaluation-error"),
        ),
        ("a missing scope", outcomes.iter().any(|o| o.2)),
        (
            "a user-scoped permit",
            outcomes.iter().any(|o| o.1.contains("carol-files")),
        ),
        (
            "an `in User` permit",
            outcomes.iter().any(|o| o.1.contains("dave-in-himself")),
        ),
        (
            "an `is … in` permit",
            outcomes.iter().any(|o| o.1.contains("typed-ops-refunds")),
        ),
        (
            "a prompt permit",
            outcomes.iter().any(|o| o.1.contains("prompts-for-support")),
        ),
        (
            "an action-list permit",
            outcomes.iter().any(|o| o.1.contains("resources-in-list")),
        ),
        (
            "a call_tool forbid",
            outcomes.iter().any(|o| o.1.contains("no-writes-for-bots")),
        ),
        (
            "a role forbid on any action",
            outcomes.iter().any(|o| o.1.contains("contractors-never")),
        ),
    ] {
        assert!(seen, "no {what} among {outcomes:#?}");
    }
}

#[test]
fn cached_entities_follow_the_caller_and_the_catalog() {
    let policies = r#"
@id("support-reads")
permit (principal in Role::"support", action == Action::"fs.read_file", resource)
when {
  resource.read_only && principal has tenant && principal.tenant == "acme" &&
  principal.auth_method == "api_token" && !principal.scopes.contains("suspended")
};
"#;
    let (engine, _dir) = engine_with(vec![], vec![], policies);
    let read = |p: &Principal| {
        call(&engine, p, "fs", "read_file", json!({"path": "/a"}))
            .expect("typed")
            .allowed
    };
    let mut alice = support("alice");
    alice.tenant = Some("acme".into());
    assert!(read(&alice));
    // The same user and tool with other facts (in the cache key's hash or only in its
    // equality): not the entities just made.
    for change in [
        |p: &mut Principal| p.roles = vec!["sales".into()],
        |p: &mut Principal| p.tenant = Some("globex".into()),
        |p: &mut Principal| p.tenant = None,
        |p: &mut Principal| p.method = AuthMethod::Oidc,
        |p: &mut Principal| p.scopes = vec!["suspended".into()],
    ] {
        let mut other = alice.clone();
        change(&mut other);
        assert!(!read(&other), "{other:?}");
        assert!(read(&alice), "and the first caller is unchanged");
    }
    // The tool's annotations change: the next generation's entities have the new ones.
    let mut tools = catalog().remove(0).1;
    tools[0].hints.read_only = false;
    engine.set_catalog("fs", tools);
    assert!(!read(&alice), "read_only is now false");
}
