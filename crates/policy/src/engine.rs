//! The Cedar policy engine: the operator's `.cedar` files, the config's grants and scope rules
//! compiled to Cedar, one evaluation per request, and atomic reloads.
//!
//! Fail closed: no policy is deny; `forbid` wins; a policy that errors while evaluating denies
//! the request (Cedar itself would skip it; a skipped `forbid` would allow); a call whose
//! arguments do not fit the tool's types never reaches the policies.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, LazyLock, Mutex, OnceLock, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use cedar_policy::{
    ActionConstraint, Authorizer as Cedar, Context, Decision as CedarDecision, Effect, Entities,
    Entity, EntityId, EntityTypeName, EntityUid, Policy, PolicyId, PolicySet, PrincipalConstraint,
    Request, RestrictedExpression, Schema, SchemaFragment, ValidationMode, Validator,
};
use micromcp_auth::Principal;
use micromcp_config::{Config, Grant, ScopeRule};
use sha2::{Digest, Sha256};

use crate::arguments::ArgumentError;
use crate::schema::{Catalog, ToolEntry, ToolHints, ToolType, cedar_schema, tool_types};
use crate::{Action, Decision, Kind, Obligations, may_match_with_prefix, patterns_of};

/// Annotations a policy may carry; any other is an error.
pub const ANNOTATIONS: [&str; 5] = ["id", "approval", "redact", "rate", "description"];
/// A policy file larger than this is refused (policies are text an operator writes).
const MAX_POLICY_FILE_BYTES: u64 = 4 << 20;

/// Facts about the request that are not the caller or the thing used.
#[derive(Debug, Clone)]
pub struct RequestContext<'a> {
    pub transport: &'a str,
    pub protocol_version: &'a str,
    pub client_ip: Option<IpAddr>,
    pub session: Option<&'a str>,
    pub now: SystemTime,
}

/// Why a request was refused before the policies were asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(transparent)]
    Arguments(#[from] ArgumentError),
    /// The tool is not in the catalog the policies were checked against.
    #[error("the tool is not in the service's catalog")]
    NotInCatalog,
}

/// A tool call's arguments for the request.
enum Arguments {
    /// Not a tool call.
    None,
    Known(RestrictedExpression),
    /// A list: these argument names, values unknown.
    Unknown(Vec<String>),
}

/// What a policy asks besides allow/deny (from its annotations).
#[derive(Debug, Clone, Default)]
struct Meta {
    obligations: Obligations,
    /// The scopes of a `[[policy.scopes]]` rule (its forbid is a step-up refusal).
    scope_rule: Option<Vec<String>>,
}

/// One loaded generation of policies, with the catalog they are checked against.
struct Compiled {
    /// Shared by the catalogs that come and go under the same policies.
    policies: Arc<Policies>,
    tools: BTreeMap<(String, String), ToolType>,
    schema: Option<Schema>,
    entities: EntityCache,
}

/// One loaded generation of policies.
struct Policies {
    /// Every policy, and the same without the scope rules (was a refusal only for want of
    /// scopes?), both cut by action and caller: what a request is evaluated against.
    slices: Slices,
    /// The same, whole (the tests compare decisions against them).
    #[cfg(test)]
    whole: Arc<Sets>,
    meta: HashMap<PolicyId, Meta>,
    /// The operator's policies (validated against the schema).
    user: PolicySet,
    user_permits: bool,
    /// SHA-256 over the policy files, for the audit record of a reload.
    digest: String,
}

/// The policy sets a request is evaluated against: every policy that can apply, and the same
/// without the scope rules; and the first split by whether a policy reads the context.
struct Sets {
    all: PolicySet,
    without_scopes: PolicySet,
    /// The policies of `all` that never name `context`: what they decide depends only on the
    /// caller and the thing used, so for a tool it is kept with their entities.
    fixed_permits: PolicySet,
    fixed_forbids: PolicySet,
    /// The others: evaluated for every request.
    varying: PolicySet,
}

impl Sets {
    fn new<'a>(policies: impl IntoIterator<Item = (&'a Policy, bool)>) -> Sets {
        let mut sets = Sets {
            all: PolicySet::new(),
            without_scopes: PolicySet::new(),
            fixed_permits: PolicySet::new(),
            fixed_forbids: PolicySet::new(),
            varying: PolicySet::new(),
        };
        for (policy, in_without_scopes) in policies {
            let _ = sets.all.add(policy.clone());
            if in_without_scopes {
                let _ = sets.without_scopes.add(policy.clone());
            }
            let split = if reads_context(policy) {
                &mut sets.varying
            } else if policy.effect() == Effect::Permit {
                &mut sets.fixed_permits
            } else {
                &mut sets.fixed_forbids
            };
            let _ = split.add(policy.clone());
        }
        sets
    }
}

/// Whether `policy` may read the request's context. Its text without the word `context`
/// cannot name the variable (the word in a string or an annotation only makes it count as
/// reading the context, which is always safe).
fn reads_context(policy: &Policy) -> bool {
    policy.to_string().contains("context")
}

/// The policies that can apply to one action, and the sets for each kind of caller: a policy
/// whose principal scope names a user or role the caller is not or lacks cannot apply either.
struct Slice {
    policies: Vec<Scoped>,
    /// The users and roles the principal scopes name: a caller's key keeps only these.
    users: HashSet<String>,
    roles: HashSet<String>,
    /// The sets for the callers of each key, made on first use.
    sets: RwLock<HashMap<CallerKey, Arc<Sets>>>,
}

/// A policy with what its principal scope requires of the caller.
struct Scoped {
    policy: Policy,
    in_without_scopes: bool,
    principal: PrincipalScope,
}

enum PrincipalScope {
    /// Any caller (also `principal is User` and anything the schema does not have: kept).
    Any,
    /// `principal == User::"u"` or `principal in User::"u"` (a user is in no other user).
    User(String),
    /// `principal in Role::"r"`: the caller's entity has its roles as parents, nothing more.
    Role(String),
}

impl PrincipalScope {
    fn of(policy: &Policy) -> PrincipalScope {
        match policy.principal_constraint() {
            PrincipalConstraint::Eq(uid) | PrincipalConstraint::In(uid)
                if uid.type_name() == &TYPES.user =>
            {
                PrincipalScope::User(uid.id().unescaped().to_owned())
            }
            PrincipalConstraint::In(uid) if uid.type_name() == &TYPES.role => {
                PrincipalScope::Role(uid.id().unescaped().to_owned())
            }
            _ => PrincipalScope::Any,
        }
    }
}

/// What of a caller decides which policies of a slice can apply: its user if a principal
/// scope names it, and those of its roles that one names (sorted).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CallerKey {
    user: Option<String>,
    roles: Vec<String>,
}

/// Caller keys remembered per slice; beyond this their sets are made per request.
const MAX_CALLER_KEYS: usize = 1024;

impl Slice {
    fn new(policies: &[&Policy], without_scopes: &PolicySet) -> Slice {
        let mut slice = Slice {
            policies: Vec::with_capacity(policies.len()),
            users: HashSet::new(),
            roles: HashSet::new(),
            sets: RwLock::new(HashMap::new()),
        };
        let mut seen = HashSet::new();
        for policy in policies {
            // A policy both named and on call_tool comes twice.
            if !seen.insert(policy.id()) {
                continue;
            }
            let principal = PrincipalScope::of(policy);
            match &principal {
                PrincipalScope::Any => {}
                PrincipalScope::User(u) => {
                    slice.users.insert(u.clone());
                }
                PrincipalScope::Role(r) => {
                    slice.roles.insert(r.clone());
                }
            }
            slice.policies.push(Scoped {
                policy: (*policy).clone(),
                in_without_scopes: without_scopes.policy(policy.id()).is_some(),
                principal,
            });
        }
        slice
    }

    /// The sets to evaluate a request of `principal` against.
    fn sets(&self, principal: &Principal) -> Arc<Sets> {
        let mut roles: Vec<String> = principal
            .roles
            .iter()
            .filter(|r| self.roles.contains(*r))
            .cloned()
            .collect();
        roles.sort();
        roles.dedup();
        let key = CallerKey {
            user: self
                .users
                .contains(&principal.user)
                .then(|| principal.user.clone()),
            roles,
        };
        if let Some(sets) = read(&self.sets).get(&key) {
            return sets.clone();
        }
        let applies = |scoped: &&Scoped| match &scoped.principal {
            PrincipalScope::Any => true,
            PrincipalScope::User(u) => key.user.as_ref() == Some(u),
            PrincipalScope::Role(r) => key.roles.contains(r),
        };
        let sets = Arc::new(Sets::new(
            self.policies
                .iter()
                .filter(applies)
                .map(|s| (&s.policy, s.in_without_scopes)),
        ));
        let mut cache = write(&self.sets);
        if cache.len() < MAX_CALLER_KEYS {
            cache.insert(key, sets.clone());
        }
        sets
    }
}

/// The policy set cut by action and caller, so each request is evaluated against only the
/// policies that can apply to it. Every tool is its own Cedar action (in the group
/// `call_tool`), and Cedar evaluates a policy as `principal scope && action scope && resource
/// scope && when…`: a policy whose principal or action scope does not hold for the request is
/// false without its conditions being evaluated, and scope constraints cannot error. Leaving
/// such policies out changes neither the decision, nor the policies that determined it, nor the
/// errors; it saves building and evaluating each one's condition (Cedar builds it anew per
/// request).
struct Slices {
    /// For a tool no policy names: policies on any action and on the group `call_tool`.
    tools: Slice,
    /// For a prompt or resource when no policy names its action: policies on any action.
    other: Slice,
    /// For each action some policy names: those and the ones above.
    named: HashMap<String, Slice>,
}

/// The actions a policy's action scope can hold for.
#[derive(Default)]
struct ActionScope {
    any: bool,
    /// Every tool (`action in Action::"call_tool"`).
    tools: bool,
    named: Vec<String>,
}

impl ActionScope {
    fn of(policy: &Policy) -> ActionScope {
        let mut scope = ActionScope::default();
        match policy.action_constraint() {
            ActionConstraint::Any => scope.any = true,
            ActionConstraint::Eq(uid) => scope.add(&uid, false),
            ActionConstraint::In(uids) => {
                for uid in &uids {
                    scope.add(uid, true);
                }
            }
        }
        scope
    }

    fn add(&mut self, uid: &EntityUid, is_in: bool) {
        if uid.type_name() != &TYPES.action {
            // Not an action of the schema: validation refuses it; keep it everywhere rather
            // than reason about it.
            self.any = true;
            return;
        }
        let id = uid.id().unescaped();
        if is_in && id == CALL_TOOL {
            self.tools = true;
        }
        self.named.push(id.to_owned());
    }
}

/// The group of every tool action.
const CALL_TOOL: &str = "call_tool";
/// The actions that are not tools.
const NOT_TOOLS: [&str; 2] = ["get_prompt", "read_resource"];

impl Slices {
    fn new(all: &PolicySet, without_scopes: &PolicySet) -> Slices {
        let mut any = Vec::new();
        let mut tools = Vec::new();
        let mut named: HashMap<String, Vec<&Policy>> = HashMap::new();
        for policy in all.policies() {
            let scope = ActionScope::of(policy);
            if scope.any {
                any.push(policy);
                continue;
            }
            if scope.tools {
                tools.push(policy);
            }
            for name in scope.named {
                named.entry(name).or_default().push(policy);
            }
        }
        let slice = |groups: &[&[&Policy]]| {
            let policies: Vec<&Policy> = groups.iter().flat_map(|g| g.iter().copied()).collect();
            Slice::new(&policies, without_scopes)
        };
        Slices {
            tools: slice(&[&any, &tools]),
            other: slice(&[&any]),
            named: named
                .iter()
                .map(|(name, policies)| {
                    let groups: &[&[&Policy]] = if NOT_TOOLS.contains(&name.as_str()) {
                        &[&any, policies]
                    } else {
                        &[&any, &tools, policies]
                    };
                    (name.clone(), slice(groups))
                })
                .collect(),
        }
    }

    /// The policies that can apply to `action` (its Cedar action id) of `kind`.
    fn get(&self, kind: Kind, action: &str) -> &Slice {
        self.named.get(action).unwrap_or(match kind {
            Kind::Tool => &self.tools,
            Kind::Prompt | Kind::Resource => &self.other,
        })
    }
}

/// The operator's policies as loaded from files.
struct UserPolicies {
    set: PolicySet,
    meta: HashMap<PolicyId, Meta>,
    digest: String,
}

/// What a successful reload changed.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub policies: usize,
    pub digest: String,
    /// Checked against the schema of this many catalog tools.
    pub tools: usize,
}

/// The authorization stage backed by Cedar.
pub struct PolicyEngine {
    separator: String,
    grants: Vec<Grant>,
    scope_rules: Vec<ScopeRule>,
    files: Vec<PathBuf>,
    catalog: Mutex<Catalog>,
    compiled: RwLock<Arc<Compiled>>,
    cedar: Cedar,
    #[cfg(test)]
    unsliced: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl PolicyEngine {
    /// The engine for `config`: its grants, scope rules and policy files (parsed and checked
    /// for annotations now; checked against the schema once the catalog is known, see
    /// [`PolicyEngine::check`]).
    pub fn new(config: &Config) -> Result<Self, Vec<String>> {
        Self::from_parts(
            config.gateway.separator.clone(),
            config.grants.clone(),
            config.scope_rules.clone(),
            config.policy_files.clone(),
        )
    }

    pub fn from_parts(
        separator: String,
        grants: Vec<Grant>,
        scope_rules: Vec<ScopeRule>,
        files: Vec<PathBuf>,
    ) -> Result<Self, Vec<String>> {
        let user = load_files(&files)?;
        let engine = Self {
            separator,
            grants,
            scope_rules,
            files,
            catalog: Mutex::new(Catalog::new()),
            compiled: RwLock::new(Arc::new(Compiled::empty())),
            cedar: Cedar::new(),
            #[cfg(test)]
            unsliced: std::sync::atomic::AtomicBool::new(false),
        };
        let compiled = engine.compile(user, BTreeMap::new())?;
        *write(&engine.compiled) = Arc::new(compiled);
        Ok(engine)
    }

    /// Whether policy files are configured (then the catalog is needed to check them).
    pub fn has_policy_files(&self) -> bool {
        !self.files.is_empty()
    }

    fn current(&self) -> Arc<Compiled> {
        read(&self.compiled).clone()
    }

    fn compile(
        &self,
        user: UserPolicies,
        tools: BTreeMap<(String, String), ToolType>,
    ) -> Result<Compiled, Vec<String>> {
        let mut all = user.set.clone();
        let mut without_scopes = user.set.clone();
        let mut meta = user.meta;
        let user_permits = user.set.policies().any(|p| p.effect() == Effect::Permit);
        let mut errors = Vec::new();
        for (i, grant) in self.grants.iter().enumerate() {
            let id = format!("grants[{i}]");
            let text = grant_policy(&id, grant);
            match Policy::parse(Some(PolicyId::new(&id)), &text) {
                Ok(p) => {
                    meta.insert(p.id().clone(), Meta::default());
                    let _ = without_scopes.add(p.clone());
                    let _ = all.add(p);
                }
                Err(e) => errors.push(format!("policy.grants[{i}] does not compile: {e}")),
            }
        }
        for (i, rule) in self.scope_rules.iter().enumerate() {
            let id = format!("scopes[{i}]");
            match Policy::parse(Some(PolicyId::new(&id)), scope_policy(&id, rule)) {
                Ok(p) => {
                    meta.insert(
                        p.id().clone(),
                        Meta {
                            scope_rule: Some(rule.scopes.clone()),
                            ..Meta::default()
                        },
                    );
                    let _ = all.add(p);
                }
                Err(e) => errors.push(format!("policy.scopes[{i}] does not compile: {e}")),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let schema = Schema::from_json_value(cedar_schema(tools.values()))
            .map_err(|e| tracing::error!("the generated Cedar schema is invalid: {e}"))
            .ok();
        Ok(Compiled {
            policies: Arc::new(Policies {
                slices: Slices::new(&all, &without_scopes),
                #[cfg(test)]
                whole: Arc::new(Sets::new(
                    all.policies()
                        .map(|p| (p, without_scopes.policy(p.id()).is_some())),
                )),
                meta,
                user: user.set,
                user_permits,
                digest: user.digest,
            }),
            tools,
            schema,
            entities: EntityCache::default(),
        })
    }

    /// Replaces one service's tools in the catalog and types calls by them from now on. The
    /// policies stay in force; what no longer validates against the new schema is returned
    /// (for a warning: a tool changed under the policies).
    pub fn set_catalog(&self, service: &str, tools: Vec<ToolEntry>) -> Vec<String> {
        let catalog = {
            let mut catalog = lock(&self.catalog);
            if catalog.get(service) == Some(&tools) {
                return Vec::new();
            }
            catalog.insert(service.to_owned(), tools);
            catalog.clone()
        };
        let mut guard = write(&self.compiled);
        let old = guard.clone();
        let tools = tool_types(&catalog, &self.separator);
        let schema = Schema::from_json_value(cedar_schema(tools.values())).ok();
        let problems = schema
            .as_ref()
            .map(|s| validate(s, &old.policies.user, false))
            .unwrap_or_default();
        *guard = Arc::new(Compiled {
            policies: old.policies.clone(),
            tools,
            schema,
            entities: EntityCache::default(),
        });
        problems
    }

    /// Checks the policies in force against the schema of the catalog known now.
    pub fn check(&self) -> Result<(), Vec<String>> {
        let compiled = self.current();
        let Some(schema) = &compiled.schema else {
            return Err(vec![
                "the Cedar schema of the catalog could not be built".into(),
            ]);
        };
        let errors = validate(schema, &compiled.policies.user, true);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Reads the policy files again and, if they parse and validate against the current
    /// catalog's schema, swaps them in at once; otherwise the policies in force stay.
    pub fn reload(&self) -> Result<Loaded, Vec<String>> {
        let user = load_files(&self.files)?;
        let tools = self.current().tools.clone();
        let compiled = self.compile(user, tools)?;
        let Some(schema) = &compiled.schema else {
            return Err(vec![
                "the Cedar schema of the catalog could not be built".into(),
            ]);
        };
        let errors = validate(schema, &compiled.policies.user, true);
        if !errors.is_empty() {
            return Err(errors);
        }
        let loaded = Loaded {
            policies: compiled.policies.user.policies().count(),
            digest: compiled.policies.digest.clone(),
            tools: compiled.tools.len(),
        };
        *write(&self.compiled) = Arc::new(compiled);
        Ok(loaded)
    }

    /// The digest of the policy files in force.
    pub fn digest(&self) -> String {
        self.current().policies.digest.clone()
    }

    /// The policy files (for the reload watcher).
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The generated schema in Cedar's own syntax (for `micromcp policy check --schema`).
    pub fn schema_text(&self) -> String {
        let compiled = self.current();
        let json = cedar_schema(compiled.tools.values());
        match SchemaFragment::from_json_value(json) {
            // `__cedar::` only disambiguates the built-in types from user types, and the
            // gateway's schema has none of those names.
            Ok(fragment) => fragment
                .to_cedarschema()
                .map(|s| s.replace("__cedar::", ""))
                .unwrap_or_else(|e| e.to_string()),
            Err(e) => e.to_string(),
        }
    }

    /// Arguments of catalog tools that policies cannot see (for `micromcp policy check`).
    pub fn unseen_arguments(&self) -> Vec<String> {
        let mut out = Vec::new();
        for tool in self.current().tools.values() {
            tool.arguments
                .unseen(&format!("{}: arguments", tool.public), &mut out);
        }
        out
    }

    /// The compiled text of every grant and scope rule (for `micromcp policy explain`).
    pub fn generated_policies(&self) -> Vec<String> {
        let grants = self
            .grants
            .iter()
            .enumerate()
            .map(|(i, g)| grant_policy(&format!("grants[{i}]"), g));
        let scopes = self
            .scope_rules
            .iter()
            .enumerate()
            .map(|(i, r)| scope_policy(&format!("scopes[{i}]"), r));
        grants.chain(scopes).collect()
    }

    /// The Cedar request and entities. `arguments`: the call's typed arguments, or for a list
    /// the argument names whose values are unknown (partial evaluation).
    fn request(
        &self,
        compiled: &Compiled,
        principal: &Principal,
        action: &Action<'_>,
        context: &RequestContext<'_>,
        arguments: Arguments,
        hints: Option<ToolHints>,
    ) -> Result<(Request, Held), String> {
        let name = format!("{}{}{}", action.service, self.separator, action.name);
        let types = &*TYPES;
        let (action_uid, resource_uid) = match action.kind {
            Kind::Tool => (uid(&types.action, &name), uid(&types.tool, &name)),
            Kind::Prompt => (uid(&types.action, "get_prompt"), uid(&types.prompt, &name)),
            Kind::Resource => (
                uid(&types.action, "read_resource"),
                uid(&types.resource, &name),
            ),
        };
        let make = |extra: Option<Entity>| {
            entities(
                principal,
                action,
                &name,
                (&action_uid, &resource_uid),
                hints,
                extra,
            )
        };
        let mut pairs = context_pairs(context);
        let entities = match arguments {
            Arguments::None | Arguments::Known(_) => {
                if let Arguments::Known(value) = arguments {
                    pairs.push(("arguments".into(), value));
                }
                if action.kind == Kind::Tool {
                    Held::Cached(compiled.entities.get(principal, &name, || make(None))?)
                } else {
                    Held::Fresh(make(None)?)
                }
            }
            Arguments::Unknown(names) => {
                // An entity whose attributes are unknown: the rest of the context stays known,
                // so conditions on time or the caller still decide (a record holding an
                // unknown would leave the whole context unevaluated).
                let holder = uid(&types.arguments, "unknown");
                let attrs = names
                    .into_iter()
                    .map(|n| {
                        let unknown = RestrictedExpression::new_unknown(format!("arguments.{n}"));
                        (n, unknown)
                    })
                    .collect();
                let entity = Entity::new(holder.clone(), attrs, HashSet::new())
                    .map_err(|e| e.to_string())?;
                pairs.push((
                    "arguments".into(),
                    RestrictedExpression::new_entity_uid(holder),
                ));
                Held::Fresh(make(Some(entity))?)
            }
        };
        let request = Request::new(
            uid(&types.user, &principal.user),
            action_uid,
            resource_uid,
            Context::from_pairs(pairs).map_err(|e| e.to_string())?,
            None,
        )
        .map_err(|e| e.to_string())?;
        Ok((request, entities))
    }

    /// The policy sets `request` of `principal` is evaluated against: its slice.
    fn sets(
        &self,
        compiled: &Compiled,
        kind: Kind,
        request: &Request,
        principal: &Principal,
    ) -> Arc<Sets> {
        #[cfg(test)]
        if self.unsliced() {
            return compiled.policies.whole.clone();
        }
        compiled
            .policies
            .slices
            .get(kind, action_id(request))
            .sets(principal)
    }

    /// Tests: evaluate against the whole policy sets instead of the slices.
    #[cfg(test)]
    pub(crate) fn set_unsliced(&self, unsliced: bool) {
        self.unsliced
            .store(unsliced, std::sync::atomic::Ordering::Relaxed);
    }

    fn evaluate(
        &self,
        compiled: &Compiled,
        principal: &Principal,
        action: &Action<'_>,
        context: &RequestContext<'_>,
        arguments: Arguments,
        hints: Option<ToolHints>,
    ) -> Decision {
        let (request, held) =
            match self.request(compiled, principal, action, context, arguments, hints) {
                Ok(r) => r,
                Err(e) => return Decision::deny_with_errors("error", vec![e]),
            };
        let sets = self.sets(compiled, action.kind, &request, principal);
        let entities = held.entities();
        let outcome = match &held {
            // The policies that do not read the context decided once for this caller and
            // tool; only the others are evaluated.
            Held::Cached(cached) if !self.unsliced() => {
                let fixed = cached.fixed.get_or_init(|| {
                    let permits = self.outcome(&request, &sets.fixed_permits, entities);
                    let forbids = self.outcome(&request, &sets.fixed_forbids, entities);
                    permits.and(forbids)
                });
                fixed
                    .clone()
                    .and(self.outcome(&request, &sets.varying, entities))
            }
            _ => self.outcome(&request, &sets.all, entities),
        };
        if !outcome.errors.is_empty() {
            // Fail closed: Cedar skips a policy that errors, and a skipped forbid would allow.
            return Decision::deny_with_errors("evaluation-error", outcome.errors);
        }
        if outcome.forbids.is_empty() && !outcome.permits.is_empty() {
            let mut obligations = Obligations::default();
            for id in &outcome.permits {
                if let Some(meta) = compiled.policies.meta.get(id) {
                    obligations.merge(&meta.obligations);
                }
            }
            let policies = sorted_ids(&outcome.permits);
            return Decision {
                allowed: true,
                rule: policies.join(", "),
                policies,
                obligations,
                ..Decision::deny(String::new())
            };
        }
        if outcome.forbids.is_empty() {
            return Decision::deny("default-deny".into());
        }
        let policies = sorted_ids(&outcome.forbids);
        let mut decision = Decision {
            rule: policies.join(", "),
            ..Decision::deny(String::new())
        };
        decision.missing_scopes =
            self.missing_scopes(compiled, &sets, principal, &policies, &request, entities);
        decision.policies = policies;
        decision
    }

    /// What the policies of `set` decide for `request`.
    fn outcome(&self, request: &Request, set: &PolicySet, entities: &Entities) -> Outcome {
        if set.is_empty() {
            return Outcome::default();
        }
        let response = self.cedar.is_authorized(request, set, entities);
        let reasons = response.diagnostics().reason().cloned().collect();
        let (permits, forbids) = if response.decision() == CedarDecision::Allow {
            (reasons, Vec::new())
        } else {
            // Denied: the reasons are the forbids that hold (none: no permit held either).
            (Vec::new(), reasons)
        };
        let mut errors: Vec<String> = response
            .diagnostics()
            .errors()
            .map(ToString::to_string)
            .collect();
        errors.sort();
        Outcome {
            permits,
            forbids,
            errors,
        }
    }

    #[cfg(test)]
    fn unsliced(&self) -> bool {
        self.unsliced.load(std::sync::atomic::Ordering::Relaxed)
    }

    #[cfg(not(test))]
    #[expect(clippy::unused_self, reason = "the same call as the test build's")]
    fn unsliced(&self) -> bool {
        false
    }

    /// Refused only by scope rules, and allowed without them: the scopes that are missing.
    fn missing_scopes(
        &self,
        compiled: &Compiled,
        sets: &Sets,
        principal: &Principal,
        policies: &[String],
        request: &Request,
        entities: &Entities,
    ) -> Option<String> {
        let mut missing = Vec::new();
        for id in policies {
            let scopes = compiled
                .policies
                .meta
                .get(&PolicyId::new(id))?
                .scope_rule
                .as_ref()?;
            missing.extend(scopes.iter().filter(|s| !principal.has_scope(s)).cloned());
        }
        let without = self
            .cedar
            .is_authorized(request, &sets.without_scopes, entities);
        if without.decision() != CedarDecision::Allow
            || without.diagnostics().errors().next().is_some()
        {
            return None;
        }
        missing.sort();
        missing.dedup();
        Some(missing.join(" "))
    }
}

impl crate::Authorizer for PolicyEngine {
    fn authorize(
        &self,
        principal: &Principal,
        action: Action<'_>,
        context: &RequestContext<'_>,
    ) -> Result<Decision, Refused> {
        let compiled = self.current();
        let (arguments, hints) = if action.kind == Kind::Tool {
            let tool = compiled
                .tools
                .get(&(action.service.to_owned(), action.name.to_owned()))
                .ok_or(Refused::NotInCatalog)?;
            let empty = serde_json::Map::new();
            let arguments = tool.arguments.convert(action.arguments.unwrap_or(&empty))?;
            (Arguments::Known(arguments), Some(tool.hints))
        } else {
            (Arguments::None, None)
        };
        Ok(self.evaluate(&compiled, principal, &action, context, arguments, hints))
    }

    fn may_list(
        &self,
        principal: &Principal,
        action: Action<'_>,
        listed: Option<&ToolEntry>,
        context: &RequestContext<'_>,
    ) -> bool {
        let compiled = self.current();
        if action.kind != Kind::Tool {
            return self
                .evaluate(
                    &compiled,
                    principal,
                    &action,
                    context,
                    Arguments::None,
                    None,
                )
                .allowed;
        }
        // The tool as the catalog knows it, else as listed.
        let key = (action.service.to_owned(), action.name.to_owned());
        let (names, hints): (Vec<String>, ToolHints) = match (compiled.tools.get(&key), listed) {
            (Some(tool), _) => (tool.arguments.fields.keys().cloned().collect(), tool.hints),
            (None, Some(entry)) => (
                crate::arguments::Record::of_input_schema(&entry.input_schema)
                    .fields
                    .into_keys()
                    .collect(),
                entry.hints,
            ),
            (None, None) => (Vec::new(), ToolHints::default()),
        };
        let Ok((request, held)) = self.request(
            &compiled,
            principal,
            &action,
            context,
            Arguments::Unknown(names),
            Some(hints),
        ) else {
            return false;
        };
        // Granted items are listed even when the caller lacks a scope they need (step-up: a
        // token with it can call them), so the scope rules do not hide anything.
        let sets = self.sets(&compiled, action.kind, &request, principal);
        let response =
            self.cedar
                .is_authorized_partial(&request, &sets.without_scopes, held.entities());
        // A policy that errors whatever the arguments are makes every call a denial (fail
        // closed); Cedar skips it here, which would list a tool nobody can call.
        if response.definitely_errored().next().is_some() {
            return false;
        }
        // `None`: it depends on the arguments, so some arguments may be allowed (a forbid
        // that holds whatever they are has already made it `Deny`).
        response.decision() != Some(CedarDecision::Deny)
    }

    fn may_use_any(&self, principal: &Principal, kind: Kind, service: &str) -> bool {
        if self.current().policies.user_permits {
            return true;
        }
        let prefix = format!("{service}{}", self.separator);
        self.grants
            .iter()
            .filter(|g| grant_applies(g, principal))
            .flat_map(|g| patterns_of(kind, &g.tools, &g.prompts, &g.resources))
            .any(|p| may_match_with_prefix(p, &prefix))
    }
}

impl Compiled {
    fn empty() -> Self {
        let none = PolicySet::new();
        Self {
            policies: Arc::new(Policies {
                slices: Slices::new(&none, &none),
                #[cfg(test)]
                whole: Arc::new(Sets::new([])),
                meta: HashMap::new(),
                user: none,
                user_permits: false,
                digest: String::new(),
            }),
            tools: BTreeMap::new(),
            schema: None,
            entities: EntityCache::default(),
        }
    }
}

/// What a set of policies decided: the permits and forbids that held, and the errors. A set's
/// outcome is that of its parts together: Cedar denies when a forbid holds (naming all that
/// hold), else allows when a permit holds (naming all that hold).
#[derive(Debug, Clone, Default)]
struct Outcome {
    permits: Vec<PolicyId>,
    /// When a forbid holds, the permits that also hold may be missing: they do not matter.
    forbids: Vec<PolicyId>,
    errors: Vec<String>,
}

impl Outcome {
    fn and(mut self, other: Outcome) -> Outcome {
        self.permits.extend(other.permits);
        self.forbids.extend(other.forbids);
        self.errors.extend(other.errors);
        self.errors.sort();
        self
    }
}

fn sorted_ids(ids: &[PolicyId]) -> Vec<String> {
    let mut ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
    ids.sort();
    ids
}

/// A request's entities: made for it, or kept for its caller and tool.
enum Held {
    Fresh(Entities),
    Cached(Arc<CachedEntities>),
}

impl Held {
    fn entities(&self) -> &Entities {
        match self {
            Held::Fresh(entities) => entities,
            Held::Cached(cached) => &cached.entities,
        }
    }
}

/// The Cedar id of a request's action (`fs.read_file`, `get_prompt`, …).
fn action_id(request: &Request) -> &str {
    request.action().map_or("", |a| a.id().unescaped())
}

impl Obligations {
    fn merge(&mut self, other: &Obligations) {
        self.approval |= other.approval;
        for (mine, theirs) in [
            (&mut self.redact, &other.redact),
            (&mut self.rate, &other.rate),
        ] {
            for item in theirs {
                if !mine.contains(item) {
                    mine.push(item.clone());
                }
            }
        }
    }
}

/// Whether `grant` is for `principal` (the same conditions its compiled policy checks; used
/// only to skip services in lists, where a generous answer is safe).
fn grant_applies(grant: &Grant, principal: &Principal) -> bool {
    grant
        .principal
        .as_ref()
        .is_none_or(|p| *p == principal.user)
        && (grant.agent.is_none() || grant.agent == principal.agent)
        && (grant.tenant.is_none() || grant.tenant == principal.tenant)
        && (grant.roles.is_empty() || grant.roles.iter().any(|r| principal.roles.contains(r)))
}

/// Validation errors; warnings (a policy that can never apply…) are logged if `warn`.
fn validate(schema: &Schema, policies: &PolicySet, warn: bool) -> Vec<String> {
    let result = Validator::new(schema.clone()).validate(policies, ValidationMode::Strict);
    if warn {
        for warning in result.validation_warnings() {
            tracing::warn!(target: "micromcp::policy", "{warning}");
        }
    }
    result.validation_errors().map(|e| format!("{e}")).collect()
}

/// Reads every `.cedar` file (folders: their `*.cedar` files, sorted), each policy re-identified
/// by its `@id`.
fn load_files(files: &[PathBuf]) -> Result<UserPolicies, Vec<String>> {
    let mut errors = Vec::new();
    let mut paths = Vec::new();
    for file in files {
        if file.is_dir() {
            match std::fs::read_dir(file) {
                Ok(entries) => {
                    let mut found: Vec<PathBuf> = entries
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| p.extension().is_some_and(|x| x == "cedar"))
                        .collect();
                    found.sort();
                    paths.extend(found);
                }
                Err(e) => errors.push(format!("{}: {e}", file.display())),
            }
        } else {
            paths.push(file.clone());
        }
    }
    let mut set = PolicySet::new();
    let mut meta = HashMap::new();
    let mut seen = HashSet::new();
    let mut digest = Sha256::new();
    for path in &paths {
        let text = match read_policy_file(path) {
            Ok(t) => t,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        digest.update(path.to_string_lossy().as_bytes());
        digest.update([0]);
        digest.update(text.as_bytes());
        let parsed = match PolicySet::from_str(&text) {
            Ok(p) => p,
            Err(e) => {
                errors.push(format!("{}: {}", path.display(), parse_error(&e, &text)));
                continue;
            }
        };
        if parsed.templates().next().is_some() {
            errors.push(format!(
                "{}: policy templates (?principal, ?resource) are not supported",
                path.display()
            ));
        }
        for policy in parsed.policies() {
            if let Some(id) = policy.annotation("id")
                && !seen.insert(id.to_owned())
            {
                errors.push(format!(
                    "{}: @id({id:?}) is used by another policy; ids must be unique",
                    path.display()
                ));
                continue;
            }
            match checked_policy(policy) {
                Ok((id, m)) => {
                    let _ = set.add(policy.new_id(PolicyId::new(&id)));
                    meta.insert(PolicyId::new(&id), m);
                }
                Err(problems) => errors.extend(
                    problems
                        .into_iter()
                        .map(|p| format!("{}: {p}", path.display())),
                ),
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(UserPolicies {
        set,
        meta,
        digest: if paths.is_empty() {
            String::new()
        } else {
            format!("sha256:{}", hex::encode(digest.finalize()))
        },
    })
}

fn read_policy_file(path: &Path) -> Result<String, String> {
    let size = std::fs::metadata(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    if size > MAX_POLICY_FILE_BYTES {
        return Err(format!(
            "{}: larger than {} bytes",
            path.display(),
            MAX_POLICY_FILE_BYTES
        ));
    }
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// A parse error with the line it is on.
fn parse_error(e: &cedar_policy::ParseErrors, text: &str) -> String {
    use miette::Diagnostic;
    let at = e
        .labels()
        .and_then(|mut labels| labels.next())
        .map(|label| {
            let line = text[..label.offset().min(text.len())]
                .lines()
                .count()
                .max(1);
            format!(" (line {line})")
        })
        .unwrap_or_default();
    format!("{e}{at}")
}

/// The policy's `@id` and obligations, or what is wrong with its annotations.
fn checked_policy(policy: &Policy) -> Result<(String, Meta), Vec<String>> {
    let shown = policy.annotation("id").map_or_else(
        || format!("policy at {}", policy.id()),
        |id| format!("policy {id:?}"),
    );
    let mut problems = Vec::new();
    for (key, _) in policy.annotations() {
        if !ANNOTATIONS.contains(&key) {
            problems.push(format!(
                "{shown}: unknown annotation @{key} (known: {})",
                ANNOTATIONS.map(|a| format!("@{a}")).join(", ")
            ));
        }
    }
    let id = match policy.annotation("id") {
        Some(id) if id.starts_with("grants[") || id.starts_with("scopes[") => {
            problems.push(format!("{shown}: ids starting with grants[ or scopes[ are reserved for the config's grants and scope rules"));
            id.to_owned()
        }
        Some(id) if !id.trim().is_empty() => id.to_owned(),
        _ => {
            problems.push(format!(
                "{shown}: every policy needs @id(\"…\"), so decisions and the audit can name it"
            ));
            String::new()
        }
    };
    let mut obligations = Obligations::default();
    let permit = policy.effect() == Effect::Permit;
    match policy.annotation("approval") {
        None => {}
        Some("required") if permit => obligations.approval = true,
        Some("required") => problems.push(format!(
            "{shown}: @approval belongs on a permit (a forbid already refuses)"
        )),
        Some(other) => problems.push(format!(
            "{shown}: @approval({other:?}) is not known; use @approval(\"required\")"
        )),
    }
    for (key, list) in [
        ("redact", &mut obligations.redact),
        ("rate", &mut obligations.rate),
    ] {
        if let Some(value) = policy.annotation(key) {
            if !permit {
                problems.push(format!("{shown}: @{key} belongs on a permit"));
            }
            if value.trim().is_empty() {
                problems.push(format!("{shown}: @{key} needs a value"));
            }
            list.push(value.to_owned());
        }
    }
    if problems.is_empty() {
        Ok((
            id,
            Meta {
                obligations,
                scope_rule: None,
            },
        ))
    } else {
        Err(problems)
    }
}

/// A Cedar string literal.
fn literal(s: &str) -> String {
    format!("\"{}\"", s.escape_default())
}

/// A glob as a Cedar `like` pattern: `*` stays the wildcard, everything else is literal.
fn like_pattern(glob: &str) -> String {
    literal(glob)
}

fn kind_condition(kind: &str, patterns: &[String]) -> Option<String> {
    if patterns.is_empty() {
        return None;
    }
    let names: Vec<String> = patterns
        .iter()
        .map(|p| format!("resource.name like {}", like_pattern(p)))
        .collect();
    Some(format!("(resource is {kind} && ({}))", names.join(" || ")))
}

fn what_condition(tools: &[String], prompts: &[String], resources: &[String]) -> String {
    let kinds: Vec<String> = [
        kind_condition("Tool", tools),
        kind_condition("Prompt", prompts),
        kind_condition("Resource", resources),
    ]
    .into_iter()
    .flatten()
    .collect();
    if kinds.is_empty() {
        "false".into()
    } else {
        kinds.join(" || ")
    }
}

/// `[[policy.grants]]` entry `id` as a Cedar permit.
fn grant_policy(id: &str, grant: &Grant) -> String {
    let mut who = Vec::new();
    if let Some(p) = &grant.principal {
        who.push(format!("principal == User::{}", literal(p)));
    }
    if let Some(agent) = &grant.agent {
        who.push(format!(
            "principal has agent && principal.agent == {}",
            literal(agent)
        ));
    }
    if let Some(issuer) = &grant.issuer {
        who.push(format!(
            "principal has issuer && principal.issuer == {}",
            literal(issuer.trim_end_matches('/'))
        ));
    }
    if let Some(tenant) = &grant.tenant {
        who.push(format!(
            "principal has tenant && principal.tenant == {}",
            literal(tenant)
        ));
    }
    if !grant.roles.is_empty() {
        let roles: Vec<String> = grant.roles.iter().map(|r| literal(r)).collect();
        who.push(format!(
            "principal.roles.containsAny([{}])",
            roles.join(", ")
        ));
    }
    if !grant.scopes.is_empty() {
        let scopes: Vec<String> = grant.scopes.iter().map(|s| literal(s)).collect();
        who.push(format!(
            "principal.scopes.containsAll([{}])",
            scopes.join(", ")
        ));
    }
    who.push(format!(
        "({})",
        what_condition(&grant.tools, &grant.prompts, &grant.resources)
    ));
    format!(
        "@id({})\npermit (principal, action, resource)\nwhen {{ {} }};",
        literal(id),
        who.join(" && ")
    )
}

/// `[[policy.scopes]]` entry `id` as a Cedar forbid (unless the caller holds every scope).
fn scope_policy(id: &str, rule: &ScopeRule) -> String {
    let scopes: Vec<String> = rule.scopes.iter().map(|s| literal(s)).collect();
    format!(
        "@id({})\nforbid (principal, action, resource)\nwhen {{ {} }}\nunless {{ principal.scopes.containsAll([{}]) }};",
        literal(id),
        what_condition(&rule.tools, &rule.prompts, &rule.resources),
        scopes.join(", ")
    )
}

/// The entity types of the schema, parsed once: Cedar parses a type name with its whole
/// grammar, which cost more than the rest of building a request.
struct Types {
    user: EntityTypeName,
    role: EntityTypeName,
    service: EntityTypeName,
    tool: EntityTypeName,
    prompt: EntityTypeName,
    resource: EntityTypeName,
    action: EntityTypeName,
    arguments: EntityTypeName,
}

static TYPES: LazyLock<Types> = LazyLock::new(|| {
    let parse = |name: &str| EntityTypeName::from_str(name).expect("a fixed, valid type name");
    Types {
        user: parse("User"),
        role: parse("Role"),
        service: parse("Service"),
        tool: parse("Tool"),
        prompt: parse("Prompt"),
        resource: parse("Resource"),
        action: parse("Action"),
        arguments: parse("Arguments"),
    }
});

fn uid(type_name: &EntityTypeName, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(type_name.clone(), EntityId::new(id))
}

fn string(s: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(s.to_owned())
}

fn string_set(items: &[String]) -> RestrictedExpression {
    RestrictedExpression::new_set(items.iter().map(|s| string(s)))
}

/// The entities of a request: the caller, the thing used (a tool with its annotations, in its
/// service) and the action (a tool's in `call_tool`), and `extra`.
fn entities(
    principal: &Principal,
    action: &Action<'_>,
    name: &str,
    (action_uid, resource_uid): (&EntityUid, &EntityUid),
    hints: Option<ToolHints>,
    extra: Option<Entity>,
) -> Result<Entities, String> {
    let types = &*TYPES;
    let mut attrs = HashMap::from([
        ("name".to_owned(), string(name)),
        ("service".to_owned(), string(action.service)),
    ]);
    let mut group = HashSet::new();
    match action.kind {
        Kind::Tool => {
            group.insert(uid(&types.action, CALL_TOOL));
            let hints = hints.unwrap_or_default();
            attrs.insert("tool".into(), string(action.name));
            for (key, value) in [
                ("read_only", hints.read_only),
                ("destructive", hints.destructive),
                ("idempotent", hints.idempotent),
                ("open_world", hints.open_world),
            ] {
                attrs.insert(key.into(), RestrictedExpression::new_bool(value));
            }
        }
        Kind::Prompt => {
            attrs.insert("prompt".into(), string(action.name));
        }
        Kind::Resource => {
            attrs.insert("uri".into(), string(action.name));
        }
    }
    let resource = Entity::new(
        resource_uid.clone(),
        attrs,
        HashSet::from([uid(&types.service, action.service)]),
    )
    .map_err(|e| e.to_string())?;
    let action_entity = Entity::new_no_attrs(action_uid.clone(), group);
    let entities = [principal_entity(principal)?, resource, action_entity]
        .into_iter()
        .chain(extra);
    Entities::from_entities(entities, None).map_err(|e| e.to_string())
}

/// The entities of recent (caller, tool) pairs. Making them is most of what a request costs
/// besides its policies: Cedar checks the hierarchy and computes its transitive closure anew
/// each time. Kept per catalog generation (they hold the tools' annotations), keyed by the
/// whole `Principal` (equality, not only the hash), at most [`MAX_CACHED_ENTITIES`] pairs.
#[derive(Default)]
struct EntityCache(RwLock<HashMap<u64, Arc<CachedEntities>>>);

struct CachedEntities {
    principal: Principal,
    tool: String,
    entities: Entities,
    /// What the policies that do not read the context decided for this caller and tool.
    fixed: OnceLock<Outcome>,
}

const MAX_CACHED_ENTITIES: usize = 4096;

static ENTITY_HASHER: LazyLock<std::collections::hash_map::RandomState> =
    LazyLock::new(std::collections::hash_map::RandomState::new);

impl EntityCache {
    fn get(
        &self,
        principal: &Principal,
        tool: &str,
        make: impl FnOnce() -> Result<Entities, String>,
    ) -> Result<Arc<CachedEntities>, String> {
        use std::hash::BuildHasher;
        // Equal principals hash equal: these fields are part of their equality.
        let key = ENTITY_HASHER.hash_one((
            &principal.user,
            &principal.agent,
            &principal.tenant,
            &principal.roles,
            tool,
        ));
        if let Some(cached) = read(&self.0).get(&key)
            && cached.principal == *principal
            && cached.tool == tool
        {
            return Ok(cached.clone());
        }
        let cached = Arc::new(CachedEntities {
            principal: principal.clone(),
            tool: tool.to_owned(),
            entities: make()?,
            fixed: OnceLock::new(),
        });
        let mut map = write(&self.0);
        if map.len() >= MAX_CACHED_ENTITIES {
            map.clear();
        }
        map.insert(key, cached.clone());
        Ok(cached)
    }
}

fn principal_entity(p: &Principal) -> Result<Entity, String> {
    let mut attrs = HashMap::from([
        ("user".to_owned(), string(&p.user)),
        ("roles".to_owned(), string_set(&p.roles)),
        ("scopes".to_owned(), string_set(&p.scopes)),
        ("auth_method".to_owned(), string(p.method.as_str())),
    ]);
    for (key, value) in [
        ("agent", &p.agent),
        ("tenant", &p.tenant),
        ("clearance", &p.clearance),
    ] {
        if let Some(v) = value {
            attrs.insert(key.to_owned(), string(v));
        }
    }
    if let Some(issuer) = &p.issuer {
        attrs.insert("issuer".into(), string(issuer.trim_end_matches('/')));
    }
    let parents = p.roles.iter().map(|r| uid(&TYPES.role, r)).collect();
    Entity::new(uid(&TYPES.user, &p.user), attrs, parents).map_err(|e| e.to_string())
}

const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

thread_local! {
    /// The last second's `context.time` record and the last client address as Cedar
    /// expressions, per thread: making a `datetime(…)` or `ip(…)` expression parses the
    /// extension's name with Cedar's grammar each time, and both change rarely.
    static LAST_TIME: RefCell<Option<(u64, RestrictedExpression)>> = const { RefCell::new(None) };
    static LAST_IP: RefCell<Option<(IpAddr, RestrictedExpression)>> = const { RefCell::new(None) };
}

/// The `context.time` record of second `secs` since the epoch.
fn time_record(secs: u64) -> RestrictedExpression {
    LAST_TIME.with_borrow_mut(|last| match last {
        Some((at, record)) if *at == secs => record.clone(),
        _ => {
            let record = make_time_record(secs);
            *last = Some((secs, record.clone()));
            record
        }
    })
}

fn ip_expression(ip: IpAddr) -> RestrictedExpression {
    LAST_IP.with_borrow_mut(|last| match last {
        Some((at, expression)) if *at == ip => expression.clone(),
        _ => {
            let expression = RestrictedExpression::new_ip(ip.to_string());
            *last = Some((ip, expression.clone()));
            expression
        }
    })
}

fn context_pairs(c: &RequestContext<'_>) -> Vec<(String, RestrictedExpression)> {
    let secs = c
        .now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut pairs = vec![
        ("time".to_owned(), time_record(secs)),
        ("transport".to_owned(), string(c.transport)),
        ("protocol_version".to_owned(), string(c.protocol_version)),
    ];
    if let Some(ip) = c.client_ip {
        pairs.push(("client_ip".into(), ip_expression(ip)));
    }
    if let Some(session) = c.session {
        pairs.push(("session".into(), string(session)));
    }
    pairs
}

fn make_time_record(secs: u64) -> RestrictedExpression {
    let days = secs / 86_400;
    let now = humantime::format_rfc3339_seconds(UNIX_EPOCH + std::time::Duration::from_secs(secs));
    RestrictedExpression::new_record([
        (
            "now".to_owned(),
            RestrictedExpression::new_datetime(now.to_string()),
        ),
        (
            "weekday".to_owned(),
            string(WEEKDAYS[usize::try_from((days + 4) % 7).unwrap_or(0)]),
        ),
        (
            "hour".to_owned(),
            RestrictedExpression::new_long(i64::try_from((secs % 86_400) / 3600).unwrap_or(0)),
        ),
    ])
    .expect("distinct keys")
}

impl Decision {
    fn deny_with_errors(rule: &str, errors: Vec<String>) -> Self {
        Self {
            errors,
            ..Decision::deny(rule.into())
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}
