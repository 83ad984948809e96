//! Many hosts: the registry host, then the server (its token comes back with its facts, or from
//! its apply script when this apply started it), then the agents on the one bounded worker pool.
//! Each host is one [`driver::converge`]; a failed agent never stops the others, a failed server
//! stops the agents (they could not join).

use std::time::Duration;

use serde::Serialize;

use crate::profile::OsProfile;
use crate::render::{self, HostState, SERVER_TOKEN, Secrets};
use crate::spec::{Node, Role};
use crate::transport::{EventKind, Facts, Host, SshHost, pool};

use super::change::Change;
use super::context::Ctx;
use super::driver::{self, Job, ServerCell, ServerInfo, ServerLink};
use super::error::{Cause, ConvergeError};

/// What a host is in the cluster (for output).
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum HostRole {
    Server,
    Agent,
    Registry,
}

impl HostRole {
    pub fn as_str(self) -> &'static str {
        match self {
            HostRole::Server => "server",
            HostRole::Agent => "agent",
            HostRole::Registry => "registry",
        }
    }
}

impl From<Role> for HostRole {
    fn from(r: Role) -> HostRole {
        match r {
            Role::Server => HostRole::Server,
            Role::Agent => HostRole::Agent,
        }
    }
}

impl std::fmt::Display for HostRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Serialize)]
pub struct HostPlan {
    pub node: String,
    pub address: String,
    pub role: HostRole,
    pub changes: Vec<Change>,
    /// Why this host could not be planned or applied.
    pub error: Option<ConvergeError>,
    /// The host's current generation after this run (plan: before it), for cluster.lock.
    pub generation: Option<HostGeneration>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HostGeneration {
    pub number: u64,
    /// sha256 of its manifest (current.json).
    pub manifest: String,
}

impl HostGeneration {
    fn of(o: &driver::Outcome) -> Option<HostGeneration> {
        Some(HostGeneration { number: o.generation?, manifest: o.manifest_sha.clone()? })
    }
}

/// What a host's work gives back.
type Done = (Vec<Change>, Option<HostGeneration>);

/// Runs one host's work and turns it into its plan, with progress events around it.
fn host_plan(ctx: &Ctx, name: &str, address: &str, role: HostRole, work: impl FnOnce() -> Result<Done, ConvergeError>) -> HostPlan {
    let mut plan = HostPlan { node: name.to_string(), address: address.to_string(), role, changes: vec![], error: None, generation: None };
    if super::interrupt::interrupted() {
        // Interrupted before this host was started: no connection is made.
        plan.error = Some(ConvergeError::new(name, "interrupted", Cause::Interrupted { partial: false }));
        return plan;
    }
    if let Some(by) = ctx.halted_by() {
        plan.error = Some(ConvergeError::new(name, "halted", Cause::Halted { by }));
        return plan;
    }
    ctx.event(name, EventKind::Started);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
        .unwrap_or_else(|_| Err(ConvergeError::new(name, "internal", Cause::Input("internal error (panic)".into()))));
    match result {
        Ok((ch, generation)) => {
            let verb = if ctx.wet { "made" } else { "pending" };
            ctx.event(name, EventKind::Done(format!("{} change(s) {verb}", ch.len())));
            plan.changes = ch;
            plan.generation = generation;
        }
        Err(e) => {
            ctx.event(name, EventKind::Failed(e.to_string().lines().next().unwrap_or("").to_string()));
            plan.error = Some(e);
        }
    }
    plan
}

/// Which OS profile a node uses: the declared one (checked against the facts) or the one its facts match.
pub fn node_profile<'a>(profiles: &'a crate::profile::Profiles, node: &Node, facts: &Facts) -> Result<&'a OsProfile, Cause> {
    let detected = profiles.detect(&facts.os_release, &facts.arch);
    let names = |v: &[&OsProfile]| v.iter().map(|o| o.name.clone()).collect::<Vec<_>>().join(", ");
    match &node.profile {
        Some(p) => {
            let os = profiles.os(&p.value).ok_or_else(|| Cause::Profile(format!("unknown profile {}", p.value)))?;
            if !os.matches(&facts.os_release, &facts.arch) {
                return Err(Cause::Profile(format!(
                    "node {} declares profile `{}` but the board reports ID={} arch={} (matches: {})",
                    node.name,
                    os.name,
                    facts.os_id().unwrap_or("?"),
                    facts.arch,
                    if detected.is_empty() { "none".into() } else { names(&detected) }
                )));
            }
            Ok(os)
        }
        None => match detected.as_slice() {
            [one] => Ok(one),
            [] => Err(Cause::Profile(format!(
                "node {}: no OS profile matches ID={} arch={}; add one under profiles/os/ or set profile=",
                node.name,
                facts.os_id().unwrap_or("?"),
                facts.arch
            ))),
            many => Err(Cause::Profile(format!("node {}: several OS profiles match ({}); set profile= on the node", node.name, names(many)))),
        },
    }
}

/// The profiles a node could have, before its facts are known.
fn candidate_profiles<'a>(ctx: &Ctx<'a>, node: &Node) -> Vec<&'a OsProfile> {
    match node.profile.as_ref().and_then(|p| ctx.profiles.os(&p.value)) {
        Some(os) => vec![os],
        None => ctx.profiles.os.iter().collect(),
    }
}

fn k3s_path(os: &OsProfile) -> String {
    os.path("k3s-binary").unwrap_or(render::K3S_BIN).to_string()
}

/// Where k3s lives on a node, from its OS profile: the declared one, else the one its facts
/// match (one remote command).
pub fn k3s_on(ctx: &Ctx, node: &Node, host: &mut dyn Host) -> Result<String, Cause> {
    if let Some(os) = node.profile.as_ref().and_then(|p| ctx.profiles.os(&p.value)) {
        return Ok(k3s_path(os));
    }
    let facts = host.facts(&crate::transport::FactsQuery::default())?;
    Ok(k3s_path(node_profile(ctx.profiles, node, &facts)?))
}

/// Plan or apply the registry host: deploy the registry, then (wet) wait until /v2/ answers.
pub fn converge_registry(ctx: &Ctx) -> Option<HostPlan> {
    // Only a managed registry: an external one is never reached over SSH.
    let r = ctx.cluster.managed_registry()?;
    let pw = ctx.registry_password.as_deref();
    Some(host_plan(ctx, &r.name, &r.address, HostRole::Registry, || {
        let err = |phase: &'static str| move |e: Cause| ConvergeError::new(&r.name, phase, e);
        let mut host = ctx.connect_to(&r.name, &r.address, &r.ssh).map_err(err("connect"))?;
        let pick = |facts: &Facts| -> Result<&OsProfile, Cause> {
            let detected = ctx.profiles.detect(&facts.os_release, &facts.arch);
            match (detected.as_slice(), &r.binary) {
                ([one, ..], _) => Ok(*one),
                ([], Some(_)) => ctx.profiles.os("debian-host").ok_or_else(|| Cause::Profile("no fallback OS profile".into())),
                ([], None) => Err(Cause::Profile(format!(
                    "registry host {}: no OS profile matches ID={} arch={}",
                    r.name,
                    facts.os_id().unwrap_or("?"),
                    facts.arch
                ))),
            }
        };
        let htpasswd = render::registry::htpasswd_path();
        let candidates: Vec<HostState> =
            ctx.profiles.os.iter().filter_map(|os| render::registry::host_state(r, os, pw, None).ok()).collect();
        let choose = |facts: &Facts| -> Result<HostState, Cause> {
            let os = pick(facts)?;
            let existing = facts.contents.get(&htpasswd).map(|b| String::from_utf8_lossy(b).into_owned());
            render::registry::host_state(r, os, pw, existing.as_deref()).map_err(Cause::Render)
        };
        let job = Job {
            name: &r.name,
            role: Role::Server,
            candidates,
            reads: if r.auth.is_some() { vec![htpasswd.clone()] } else { vec![] },
            choose: &choose,
            early: None,
            rollback: None,
            uploads_done: None,
        };
        let out = driver::converge(ctx, &mut host, &job, None)?;
        if ctx.wet {
            wait_registry_healthy(ctx).map_err(err("verify"))?;
        }
        Ok((out.changes.clone(), HostGeneration::of(&out)))
    }))
}

/// GET /v2/ (authenticated, trusting the registry's CA) until the registry answers.
pub fn wait_registry_healthy(ctx: &Ctx) -> Result<(), Cause> {
    let client = crate::images::client(ctx.cluster, ctx.registry_password.as_deref())?
        .ok_or(Cause::Images(crate::images::ImagesError::NoRegistry))?;
    let mut last = String::new();
    for _ in 0..60 {
        match client.ping() {
            Ok(()) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Err(Cause::RegistryUnhealthy { endpoint: client.endpoint().to_string(), last })
}

/// A node's job: candidates for every profile it may have, the final render from its facts.
fn node_job<'a>(
    ctx: &'a Ctx<'a>,
    node: &'a Node,
    token: Option<&'a str>,
    choose: driver::Render<'a>,
    early: Option<driver::Render<'a>>,
) -> Job<'a> {
    let secrets = Secrets { token, registry_password: ctx.registry_password.as_deref() };
    let candidates = candidate_profiles(ctx, node).into_iter().filter_map(|os| node_state(ctx, os, node, &secrets).ok()).collect();
    Job {
        name: &node.name,
        role: node.role,
        candidates,
        reads: if node.role == Role::Server { vec![SERVER_TOKEN.to_string()] } else { vec![] },
        choose,
        early,
        rollback: ctx.rollback.get(&node.name),
        uploads_done: None,
    }
}

fn render_for<'a>(ctx: &'a Ctx<'a>, node: &'a Node, token: Option<&'a str>) -> impl Fn(&Facts) -> Result<HostState, Cause> + 'a {
    move |facts: &Facts| {
        let os = node_profile(ctx.profiles, node, facts)?;
        node_state(ctx, os, node, &Secrets { token, registry_password: ctx.registry_password.as_deref() })
    }
}

/// A node's rendered state plus the air-gap image tarballs it gets; for a rollback, the state of
/// the generation it goes back to.
fn node_state(ctx: &Ctx, os: &OsProfile, node: &Node, secrets: &Secrets) -> Result<HostState, Cause> {
    let mut st = render::node_state(ctx.cluster, os, node, secrets)?;
    if let Some(m) = ctx.rollback.get(&node.name) {
        return Ok(crate::generation::to_state(&m.to, &st));
    }
    st.files.extend(render::airgap::files(&ctx.tarballs, &ctx.cluster.k3s.version, &st.service.unit));
    Ok(st)
}

/// One job of the node run: the server (converged, or only asked for its token when not
/// selected), or an agent.
enum NodeJob<'a> {
    Server { node: &'a Node, selected: bool },
    Agent(&'a Node),
}

/// Plan or apply the nodes. Every host starts at once on the one bounded pool (the server
/// first in line): agents connect, lock, read their facts and stream their binaries while the
/// server converges, then plan with the server's token. A failed server stops the agents
/// before they change anything but their binary.
pub fn run_nodes(ctx: &Ctx, selected: &dyn Fn(&Node) -> bool) -> Vec<HostPlan> {
    let c = ctx.cluster;
    if let crate::spec::BinarySource::Url(url) = &c.k3s.binary.source
        && let Err(e) = crate::artifact::fetch(url, &c.k3s.binary.sha256)
    {
        let e = std::sync::Arc::new(e);
        return c
            .nodes
            .iter()
            .filter(|n| selected(n))
            .map(|n| HostPlan {
                node: n.name.clone(),
                address: n.address.clone(),
                role: n.role.into(),
                changes: vec![],
                error: Some(ConvergeError::new(&n.name, "fetch", Cause::Artifact(e.clone()))),
                generation: None,
            })
            .collect();
    }
    let agents: Vec<&Node> = c.agents().filter(|n| selected(n)).collect();
    let mut jobs: Vec<NodeJob> = Vec::new();
    if let Some(s) = c.servers().next()
        && (selected(s) || !agents.is_empty())
    {
        jobs.push(NodeJob::Server { node: s, selected: selected(s) });
    }
    jobs.extend(agents.iter().map(|a| NodeJob::Agent(a)));
    let cell = ServerCell::default();
    let server_host: std::sync::Mutex<Option<SshHost>> = std::sync::Mutex::new(None);
    if !jobs.iter().any(|j| matches!(j, NodeJob::Server { .. })) {
        cell.set(Ok(ServerInfo { token: None, k3s: render::K3S_BIN.into(), new: true }));
    }
    let plans: Vec<Option<HostPlan>> = pool(&jobs, ctx.parallel, |job| match job {
        NodeJob::Server { node, selected } => {
            let plan = server_job(ctx, node, *selected, !agents.is_empty(), &cell, &server_host);
            // An unselected server that answered is not reported.
            (*selected || plan.error.is_some()).then_some(plan)
        }
        NodeJob::Agent(a) => Some(agent_job(ctx, a, &cell, &server_host)),
    });
    plans.into_iter().flatten().collect()
}

fn server_job(
    ctx: &Ctx,
    s: &Node,
    selected: bool,
    agents_wait: bool,
    cell: &ServerCell,
    server_host: &std::sync::Mutex<Option<SshHost>>,
) -> HostPlan {
    let mut info = None;
    let plan = host_plan(ctx, &s.name, &s.address, HostRole::Server, || {
        let err = |phase: &'static str| move |e: Cause| ConvergeError::new(&s.name, phase, e);
        let mut host = ctx.connect(s).map_err(err("connect"))?;
        if !selected {
            // Not selected: only what the agents need from it (one command).
            let out = host
                .exec(&format!("cat {}", crate::transport::cmd::quote(SERVER_TOKEN)), None, Some(Duration::from_secs(60)))
                .map_err(|e| err("token")(e.into()))?;
            let token = Some(out.stdout_str().trim().to_string()).filter(|t| out.success() && !t.is_empty());
            let k3s = k3s_on(ctx, s, &mut host).unwrap_or_else(|_| render::K3S_BIN.into());
            info = Some(ServerInfo { new: token.is_none(), token, k3s });
            *server_host.lock().unwrap_or_else(|p| p.into_inner()) = Some(host);
            return Ok((vec![], None));
        }
        let choose = render_for(ctx, s, None);
        let job = driver::Job { uploads_done: Some(cell), ..node_job(ctx, s, None, &choose, None) };
        let out = driver::converge(ctx, &mut host, &job, None)?;
        let os = node_profile(ctx.profiles, s, &out.facts).map_err(err("render"))?;
        let new = !out.facts.contents.contains_key(SERVER_TOKEN);
        let from_script = out.values.iter().find(|(k, _)| k == "token").map(|(_, v)| v.clone());
        let token = from_script
            .or_else(|| out.facts.contents.get(SERVER_TOKEN).cloned())
            .map(|b| String::from_utf8_lossy(&b).trim().to_string())
            .filter(|t| !t.is_empty());
        if ctx.wet && token.is_none() && agents_wait {
            return Err(err("service")(Cause::NoToken));
        }
        info = Some(ServerInfo { token, k3s: k3s_path(os), new });
        *server_host.lock().unwrap_or_else(|p| p.into_inner()) = Some(host);
        Ok((out.changes.clone(), HostGeneration::of(&out)))
    });
    match (info, &plan.error) {
        (Some(i), None) => cell.set(Ok(i)),
        _ => cell.set(Err(driver::ServerDown { server: s.name.clone() })),
    }
    plan
}

fn agent_job(ctx: &Ctx, a: &Node, cell: &ServerCell, server_host: &std::sync::Mutex<Option<SshHost>>) -> HostPlan {
    host_plan(ctx, &a.name, &a.address, HostRole::Agent, || {
        let mut host = ctx.connect(a).map_err(|e| ConvergeError::new(&a.name, "connect", e))?;
        let early = render_for(ctx, a, None);
        let choose = |facts: &Facts| -> Result<HostState, Cause> {
            let info = cell.wait().map_err(Cause::ServerFailed)?;
            render_for(ctx, a, info.token.as_deref())(facts)
        };
        let job = node_job(ctx, a, None, &choose, Some(&early));
        let link = ServerLink { host: server_host, cell };
        let out = driver::converge(ctx, &mut host, &job, Some(link))?;
        Ok((out.changes.clone(), HostGeneration::of(&out)))
    })
}

/// Per-host counts for the summary line.
pub fn totals(plans: &[HostPlan]) -> std::collections::BTreeMap<&'static str, usize> {
    let mut t = std::collections::BTreeMap::new();
    t.insert("hosts", plans.len());
    t.insert("changes", plans.iter().map(|p| p.changes.len()).sum());
    t.insert("failed", plans.iter().filter(|p| p.error.is_some()).count());
    t
}
