//! The host driver: runs the phases on one host in one remote command. It builds the facts
//! query from every phase's probes, starts the held lock+facts command, plans with the phases'
//! pure functions, and, only when applying and something changed, streams the uploads and sends
//! the one apply script. Dry or wet is decided here and nowhere else.

use std::time::Duration;

use crate::render::HostState;
use crate::spec::Role;
use crate::transport::{EventKind, Facts, FactsQuery, Host, SshHost};

use super::change::Change;
use super::context::Ctx;
use super::error::{Cause, ConvergeError};
use super::phase::{self, Actions, Desired, Observed, Phase};
use super::session::{self, LockState};

/// How long the lock+facts command may take to print its facts.
const FACTS_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a drained agent (or the server the agents drain after) has to come back when the
/// health gate is off (--no-rollback).
const DRAINED_WAIT: Duration = Duration::from_secs(300);
/// How long the apply script may run (a server start waits up to 60 s for its token).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(900);

/// From a host's facts, the state it must reach.
pub type Render<'a> = &'a dyn Fn(&Facts) -> Result<HostState, Cause>;

/// One host's job.
pub struct Job<'a> {
    pub name: &'a str,
    pub role: Role,
    /// The desired state for every OS profile this host could turn out to have: their probes
    /// join the one facts command, so profile detection costs no extra round trip.
    pub candidates: Vec<HostState>,
    /// Files whose content the caller needs to render the final state (token, htpasswd).
    pub reads: Vec<String>,
    /// From the facts, the state to converge to (an agent's waits for the server's token).
    pub choose: Render<'a>,
    /// From the facts, at once: the state as far as it is known before the server answers (apply
    /// streams its binaries meanwhile; they do not depend on the token).
    pub early: Option<Render<'a>>,
    /// A rollback: the generation this host goes back to (its state comes from `choose`).
    pub rollback: Option<&'a crate::generation::Rollback>,
    /// The server's job: the cell to tell once its uploads are done (the agents' wait).
    pub uploads_done: Option<&'a ServerCell>,
}

/// What the agents need from the server once it is done: its token, where k3s lives on it, and
/// whether it is brand new (no token before this run: it knows no node yet).
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub token: Option<String>,
    pub k3s: String,
    pub new: bool,
}

/// What an agent's job hears when the server's job failed: the server's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the server {server} failed")]
pub struct ServerDown {
    pub server: String,
}

/// Set once by the server's job, waited on by every agent's job: agents connect, lock, read
/// their facts and (apply) stream their binaries while the server converges, and plan only once
/// the server's answer is in.
/// The server's binary goes first: the agents need its token, which exists only once its k3s
/// started, so their own streams wait until the server's uploads are done (or it is done,
/// failed, or has nothing to send) instead of sharing the link and the CPU with it.
#[derive(Default)]
pub struct ServerCell {
    value: std::sync::Mutex<Option<Result<ServerInfo, ServerDown>>>,
    ready: std::sync::Condvar,
    uploaded: std::sync::Mutex<bool>,
    uploads_ready: std::sync::Condvar,
}

impl ServerCell {
    pub fn set(&self, v: Result<ServerInfo, ServerDown>) {
        let mut g = self.value.lock().unwrap_or_else(|p| p.into_inner());
        if g.is_none() {
            *g = Some(v);
        }
        self.ready.notify_all();
        drop(g);
        self.set_uploaded();
    }
    /// The server sent what it had to send (also implied by [`ServerCell::set`]).
    pub fn set_uploaded(&self) {
        *self.uploaded.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.uploads_ready.notify_all();
    }
    /// Wait until the server's uploads are done.
    pub fn wait_uploaded(&self) {
        let mut g = self.uploaded.lock().unwrap_or_else(|p| p.into_inner());
        while !*g {
            g = self.uploads_ready.wait(g).unwrap_or_else(|p| p.into_inner());
        }
    }
    pub fn wait(&self) -> Result<ServerInfo, ServerDown> {
        let mut g = self.value.lock().unwrap_or_else(|p| p.into_inner());
        while g.is_none() {
            g = self.ready.wait(g).unwrap_or_else(|p| p.into_inner());
        }
        g.clone().expect("set")
    }
}

/// The server, for forgetting a re-flashed agent: its connection is locked only while asked.
pub struct ServerLink<'a> {
    pub host: &'a std::sync::Mutex<Option<SshHost>>,
    pub cell: &'a ServerCell,
}

impl ServerLink<'_> {
    fn exec(&self, what: &str, command: &str, check: bool) -> Result<crate::transport::ExecOutput, crate::transport::TransportError> {
        let mut guard = self.host.lock().unwrap_or_else(|p| p.into_inner());
        let Some(h) = guard.as_mut() else {
            return Err(crate::transport::TransportError::Other { host: "server".into(), detail: "no connection to the server".into() });
        };
        let t = Some(Duration::from_secs(120));
        if check { h.exec_ok(what, command, None, t) } else { h.exec(command, None, t) }
    }
    fn info(&self) -> Option<ServerInfo> {
        self.cell.wait().ok()
    }
    /// Where k3s lives on the server (None: the server failed).
    pub fn k3s(&self) -> Option<String> {
        self.info().map(|i| i.k3s)
    }
    /// Run a command on the server (its status is the caller's to judge).
    pub fn run(&self, command: &str) -> Result<crate::transport::ExecOutput, crate::transport::TransportError> {
        self.exec("asking the server", command, false)
    }
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub changes: Vec<Change>,
    pub facts: Facts,
    /// Values the apply script printed (the server's token after a start).
    pub values: Vec<(String, Vec<u8>)>,
    pub lock: Option<LockState>,
    /// The host's current generation after this run and the sha256 of its manifest (None: it has none).
    pub generation: Option<u64>,
    pub manifest_sha: Option<String>,
}

/// The facts query for a job (pure). Apply records what it hashed in the host's hash cache.
pub fn query(job: &Job, wet: bool) -> FactsQuery {
    let mut q = FactsQuery { hash_cache: Some((format!("{}/facts-cache", session::STATE_DIR), wet)), ..FactsQuery::default() };
    // A node that may have one of several OS profiles: each profile's probes run only where
    // its os-release rule holds (a probe another profile asks too runs anyway), so an
    // openEuler board does not run Debian's `systemctl is-active nftables`, nor Debian
    // openEuler's `systemctl is-active firewalld`.
    let several = job.candidates.len() > 1;
    for st in &job.candidates {
        let want = Desired::new(st, job.role);
        // This candidate's probes are gathered apart, then merged with their guards.
        let (probes, guards) = (std::mem::take(&mut q.probes), std::mem::take(&mut q.guards));
        for p in phase::all() {
            p.probe(&want, &mut q);
        }
        let mine = (std::mem::replace(&mut q.probes, probes), std::mem::replace(&mut q.guards, guards));
        let guard = phase::os_guard(&st.detect).filter(|_| several).map(|g| phase::add_probe(&mut q, &g));
        phase::merge_probes(&mut q, mine, guard);
    }
    for r in &job.reads {
        phase::add_read(&mut q, r);
    }
    // Its mode: the generation record closes a state directory that is not 0700 yet.
    phase::add_path(&mut q, session::STATE_DIR);
    phase::add_read(&mut q, crate::generation::CURRENT);
    q
}

/// Apply, when anything changes: generation 0 first on a host that has none (what it had, kept
/// before any change), the new generation after every change (docs/generations.md). Returns its number.
fn record_generation(
    ctx: &Ctx,
    job: &Job,
    want: &Desired,
    seen: &Observed,
    current: Option<&crate::generation::Manifest>,
    found_files: Option<&Facts>,
    acts: &mut Actions,
) -> (u64, String) {
    use crate::generation as g;
    let reason = match job.rollback {
        Some(r) => format!("rollback to {}", r.to.number),
        None => ctx.reason.clone(),
    };
    let meta = g::Meta::now(&ctx.owner, &reason, ctx.source.clone());
    if current.is_none() {
        // Generation 0 is what the board had before the binaries streamed early.
        let mut before = seen.facts.clone();
        if let Some(f) = found_files {
            before.files = f.files.clone();
        }
        g::add_found(&mut acts.script, &g::found(want.st, &before, &meta));
    }
    let n = current.map(|m| m.number + 1).unwrap_or(1);
    let mut m = g::next(want.st, n, &meta);
    let old = seen.facts.k3s_version.as_deref().and_then(g::version_word);
    if let Some(r) = job.rollback {
        if let Some(file) = &r.restore {
            acts.script.bookkeeping_first(g::restore_fragment(&want.unit_file, file));
        }
    } else if want.role == crate::spec::Role::Server
        && want.st.k3s_version.is_some()
        && g::crosses_minor(old.as_deref(), want.st.k3s_version.as_deref())
    {
        // Leaving a k3s minor version: its datastore is kept with this generation (k3s cannot
        // go back without it).
        acts.script.bookkeeping_first(g::snapshot_fragment(&want.unit_file, n));
        m.datastore = Some(g::Snapshot { file: g::snapshot_path(n), k3s: old.unwrap_or_default() });
    }
    let private = matches!(
        seen.facts.files.get(session::STATE_DIR),
        Some(crate::transport::FileFact::Present { kind: crate::transport::facts::FileKind::Directory, mode: 0o700, .. })
    );
    g::add_record(&mut acts.script, &m, ctx.keep, !private);
    (n, crate::render::sha256_hex(g::manifest_text(&m).as_bytes()))
}

/// Apply on a host with no generation yet: files an upload is about to replace are kept in the
/// store first, so generation 0 can bring them back (one command, on a board's first apply only).
fn keep_found(ctx: &Ctx, host: &mut dyn Host, name: &str, facts: &Facts, dests: &[&str]) -> Result<(), ConvergeError> {
    if !ctx.wet || facts.contents.contains_key(crate::generation::CURRENT) {
        return Ok(());
    }
    let keep: Vec<String> = dests
        .iter()
        .filter_map(|p| match facts.files.get(*p) {
            Some(crate::transport::FileFact::Present { kind: crate::transport::facts::FileKind::Regular, sha256: Some(h), .. }) => {
                Some(crate::generation::store_fragment(p, h, true))
            }
            _ => None,
        })
        .collect();
    if keep.is_empty() {
        return Ok(());
    }
    let command = format!("{}{}", crate::transport::cmd::SHA_FN, keep.join(" && "));
    host.exec_ok("keeping what the board had (generation 0)", &command, None, Some(FACTS_TIMEOUT))
        .map(|_| ())
        .map_err(|e| ConvergeError::new(name, "generation", e))
}

/// Pure: every phase's changes, in order, with the phase that owns each, after the changes
/// already made (`made`: binaries streamed before the plan).
pub fn plan(want: &Desired, seen: &Observed, made: Vec<(&'static dyn Phase, Change)>) -> Result<Vec<(&'static dyn Phase, Change)>, ConvergeError> {
    let mut out = made;
    for p in phase::all() {
        let prior: Vec<Change> = out.iter().map(|(_, c)| c.clone()).collect();
        let ch = p.plan(want, seen, &prior).map_err(|c| ConvergeError::new(&want.st.node, p.name(), c))?;
        out.extend(ch.into_iter().map(|c| (p, c)));
    }
    Ok(out)
}

/// Pure: what applying `planned` takes (uploads, the script, server-side deletions); the first
/// `done` changes were already made.
pub fn actions(want: &Desired, seen: &Observed, planned: &[(&'static dyn Phase, Change)], done: usize) -> Actions {
    let mut acts = Actions::default();
    for (i, (p, c)) in planned.iter().enumerate().skip(done) {
        p.apply(want, seen, i, c, &mut acts);
    }
    super::removed::add_record(want, seen, &mut acts.script);
    acts
}

/// Phase timings for `-v`: each call logs the time since the previous one.
struct Timer<'a> {
    host: &'a str,
    last: std::cell::Cell<std::time::Instant>,
}

impl Timer<'_> {
    fn done(&self, phase: &str, detail: String) {
        let t = self.last.replace(std::time::Instant::now());
        tracing::info!(host = self.host, phase, ms = t.elapsed().as_millis() as u64, "{detail}");
    }
}

/// Close a held command without sending a script: it ends, and the board lock with it.
fn release(held: Box<dyn crate::transport::Held>) {
    let _ = held.finish(b"", Some(FACTS_TIMEOUT));
}

/// A host's run once planned, with changes to make (wet).
struct Planned {
    /// The held lock+facts command, until the script goes down it (or it is released).
    held: Option<Box<dyn crate::transport::Held>>,
    st: HostState,
    seen: Observed,
    planned: Vec<(&'static dyn Phase, Change)>,
    acts: Actions,
    outcome: Outcome,
    previous: Option<crate::generation::Manifest>,
    info: Option<ServerInfo>,
}

/// What [`plan_host`] found: nothing to carry out (plan, or a no-op apply), or changes.
enum Step {
    Done(Box<Outcome>),
    Go(Box<Planned>),
}

/// Converge one host: lock+facts, plan, then (apply) leave service if k3s restarts on an agent,
/// carry out the changes, confirm the node came back (or go back), and return to service.
pub fn converge(ctx: &Ctx, host: &mut dyn Host, job: &Job, server: Option<ServerLink>) -> Result<Outcome, ConvergeError> {
    let name = job.name;
    let timer = Timer { host: name, last: std::cell::Cell::new(std::time::Instant::now()) };
    let mut p = match plan_host(ctx, host, job, server.as_ref(), &timer)? {
        Step::Done(outcome) => return Ok(*outcome),
        Step::Go(p) => p,
    };
    let unit_file = Desired::new(&p.st, job.role).unit_file;
    // An agent whose k3s restarts leaves service first (at most --max-unavailable at once).
    let restarts = p.planned.iter().any(|(_, c)| matches!(c, Change::Restart { unit, .. } if *unit == unit_file));
    let (slot, drained) = match leave_service(ctx, job, restarts, server.as_ref(), &timer) {
        Ok(left) => left,
        Err(e) => {
            if let Some(h) = p.held.take() {
                release(h);
            }
            return Err(e);
        }
    };
    p.outcome.values = carry_out(ctx, host, job, &mut p, server.as_ref(), &timer)?;
    // A drained agent is waited for even without the gate: it is uncordoned only once Ready.
    // So is the server when agents drain after it: its API must answer before they do.
    let must_wait = drained.is_some() || (job.role == Role::Server && ctx.drain.is_some() && restarts);
    let gate = ctx.confirm.or(must_wait.then_some(DRAINED_WAIT));
    // A host's first apply has no generation to go back to: apply's wait for Ready reports it.
    if let Some(timeout) = gate
        && (p.previous.is_some() || drained.is_some())
        && job.rollback.is_none()
        && ctx.cluster.nodes.iter().any(|n| n.name == name)
        && p.planned.iter().any(|(_, c)| matches!(c, Change::Start { unit } | Change::Restart { unit, .. } if *unit == unit_file))
    {
        confirm_or_go_back(ctx, host, job, &p, drained.as_deref(), server.as_ref(), timeout, &timer)?;
    }
    if let (Some(k), Some(s)) = (&drained, &server) {
        let err = |c: Cause| ConvergeError::new(name, "uncordon", c);
        let out = s.run(&super::upgrade::uncordon_command(k, name)).map_err(|e| err(e.into()))?;
        if !out.success() {
            return Err(err(Cause::StepFailed { what: format!("kubectl uncordon {name}"), status: out.status, stderr: tail(&out.stderr_str()) }));
        }
        timer.done("uncordon", "back in service".into());
    }
    drop(slot);
    Ok(p.outcome)
}

/// Lock+facts, the early uploads, the plan and (apply) the generation it will record.
fn plan_host(ctx: &Ctx, host: &mut dyn Host, job: &Job, server: Option<&ServerLink>, timer: &Timer) -> Result<Step, ConvergeError> {
    let name = job.name;
    let err = |phase: &'static str| move |c: Cause| ConvergeError::new(name, phase, c);
    let q = query(job, ctx.wet);
    let (mut held, lock, mut facts) = open(ctx, host, name, &q)?;
    timer.done("lock+facts", format!("{} paths, {} probes, {} reads", q.paths.len(), q.probes.len(), q.reads.len() + q.reads_unless.len()));
    // Every early return below drops `held`: the channel closes, the lock goes with it.
    // The host's current generation, read once; without one, what the board had before the early
    // uploads is kept for generation 0 (copied only then: not on every plan).
    let previous = crate::generation::current(&facts);
    let found_facts = (ctx.wet && previous.is_none() && job.early.is_some()).then(|| Facts { files: facts.files.clone(), ..Facts::default() });
    let made = match job.early {
        Some(early) if ctx.wet => stream_early(ctx, host, held.as_mut(), job, &q, early, &mut facts, server)?,
        _ => Vec::new(),
    };
    if !made.is_empty() {
        timer.done("files", format!("{} binaries streamed before the plan", made.len()));
    }
    let stop = |partial: bool| err("interrupted")(Cause::Interrupted { partial });
    if super::interrupt::interrupted() {
        release(held);
        return Err(stop(!made.is_empty()));
    }
    if let Some(r) = job.rollback {
        let now = previous.as_ref().map(|m| m.number);
        if now != Some(r.from) {
            release(held);
            return Err(err("rollback")(Cause::Input(format!(
                "the current generation changed while the rollback was planned (was {}, now {}): plan it again",
                r.from,
                now.map(|n| n.to_string()).unwrap_or_else(|| "none".into())
            ))));
        }
    }
    let st = (job.choose)(&facts).map_err(|c| match c {
        _ if super::interrupt::interrupted() => stop(!made.is_empty()),
        c => err("render")(c),
    })?;
    let want = Desired::new(&st, job.role);
    let mut seen = Observed::new(&q, facts);
    if let Some(g) = phase::os_guard(&st.detect).filter(|g| seen.probe(g).is_some_and(|s| s != 0)) {
        // Its probes were skipped: the plan would miss what they check. Said, never guessed.
        release(held);
        return Err(err("facts")(Cause::Profile(format!(
            "the board's os-release matches this OS profile as rvcluster reads it, but not when its own shell sources it \
             (status {} from: {g}); check /etc/os-release",
            seen.probe(&g).unwrap_or(-1)
        ))));
    }
    let info = server.and_then(|s| s.info());
    if super::forget::is_fresh(&want, &seen) {
        seen.server_knows_node = ask_server(server, info.as_ref(), &st.node).map_err(|e| err("forget-node")(e.into()))?;
    }
    let premade = made.len();
    let planned = plan(&want, &seen, made)?;
    let mut acts = actions(&want, &seen, &planned, premade);
    let mut generation = previous.as_ref().map(|m| m.number);
    let mut manifest_sha = seen.facts.contents.get(crate::generation::CURRENT).map(|b| crate::render::sha256_hex(b));
    if ctx.wet && !planned.is_empty() {
        let (n, sha) = record_generation(ctx, job, &want, &seen, previous.as_ref(), found_facts.as_ref(), &mut acts);
        (generation, manifest_sha) = (Some(n), Some(sha));
        // Last: what this apply wrote goes into the hash cache at its new stamps, so that the
        // plans after it do not hash the files (and ask the k3s binary) again.
        let written: Vec<(&str, String)> = planned
            .iter()
            .filter_map(|(_, c)| match c {
                Change::CreateFile { path, .. } | Change::UpdateFile { path, .. } | Change::FixMode { path, .. } => {
                    want.st.files.iter().find(|f| f.path == *path).map(|f| (f.path.as_str(), f.sha256()))
                }
                _ => None,
            })
            .collect();
        if let Some((cache, _)) = &q.hash_cache {
            acts.script.bookkeeping(crate::transport::facts::cache_record(cache, &written, Some(&q.k3s_binary)));
        }
    }
    for p in phase::all() {
        let n = planned.iter().filter(|(q, _)| q.name() == p.name()).count();
        if n > 0 {
            tracing::info!(host = name, phase = p.name(), changes = n, "planned");
        }
    }
    timer.done("plan", format!("{} change(s)", planned.len()));
    let changes = planned.iter().map(|(_, c)| c.clone()).collect();
    let outcome = Outcome { changes, facts: seen.facts.clone(), values: vec![], lock: Some(lock), generation, manifest_sha };
    if !ctx.wet || acts.script.is_empty() && acts.uploads.is_empty() && acts.on_server.is_empty() {
        release(held);
        return Ok(Step::Done(Box::new(outcome)));
    }
    if super::interrupt::interrupted() {
        release(held);
        return Err(stop(premade > 0));
    }
    if let Some(by) = ctx.halted_by().filter(|_| job.rollback.is_none()) {
        release(held);
        return Err(err("halted")(Cause::Halted { by }));
    }
    Ok(Step::Go(Box::new(Planned { held: Some(held), st, seen, planned, acts, outcome, previous, info })))
}

/// Before an agent's k3s restarts: take an upgrade slot, cordon and drain it. Returns the slot
/// (held until the node is back) and, when drained, where k3s lives on the server.
fn leave_service<'c>(ctx: &'c Ctx, job: &Job, restarts: bool, server: Option<&ServerLink>, timer: &Timer) -> Result<(Option<super::upgrade::SlotGuard<'c>>, Option<String>), ConvergeError> {
    let name = job.name;
    let err = |phase: &'static str| move |c: Cause| ConvergeError::new(name, phase, c);
    let (Some(d), Some(s), Role::Agent, None, true) = (&ctx.drain, server, job.role, job.rollback, restarts) else {
        return Ok((None, None));
    };
    ctx.event(name, EventKind::Step("waiting for a free upgrade slot".into()));
    let slot = ctx.slots.take();
    if let Some(by) = ctx.halted_by() {
        return Err(err("halted")(Cause::Halted { by }));
    }
    let k = s.k3s().ok_or_else(|| err("drain")(Cause::ServerFailed(ServerDown { server: "the server".into() })))?;
    ctx.event(name, EventKind::Step("cordon and drain".into()));
    let out = s.run(&super::upgrade::drain_command(&k, name, d)).map_err(|e| err("drain")(e.into()))?;
    if !out.success() {
        let _ = s.run(&super::upgrade::uncordon_command(&k, name));
        return Err(err("drain")(Cause::DrainFailed { node: name.to_string(), output: tail(&format!("{}\n{}", out.stdout_str(), out.stderr_str())) }));
    }
    timer.done("drain", "cordoned and drained".into());
    Ok((Some(slot), Some(k)))
}

/// Make the planned changes: nodes the server must forget, what the board had before the
/// uploads (generation 0), the uploads, then the one apply script. Returns what it printed.
fn carry_out(ctx: &Ctx, host: &mut dyn Host, job: &Job, p: &mut Planned, server: Option<&ServerLink>, timer: &Timer) -> Result<Vec<(String, Vec<u8>)>, ConvergeError> {
    let name = job.name;
    let err = |phase: &'static str| move |c: Cause| ConvergeError::new(name, phase, c);
    ctx.event(name, EventKind::Step(format!("applying {} change(s)", p.outcome.changes.len())));
    for (i, node) in &p.acts.on_server {
        let (Some(s), Some(inf)) = (server, &p.info) else { unreachable!("on_server only planned with a server") };
        s.exec(&p.planned[*i].1.label(), &super::forget::delete_command(&inf.k3s, node), true)
            .map_err(|e| err("forget-node")(e.into()))?;
    }
    let dests: Vec<&str> = p.acts.uploads.iter().map(|u| u.dest.path.as_str()).collect();
    keep_found(ctx, host, name, &p.seen.facts, &dests)?;
    for u in &p.acts.uploads {
        let held = p.held.as_mut().map(|h| h.as_mut() as &mut dyn crate::transport::Held);
        upload(ctx, host, held, name, u).map_err(|e| err("files")(e.into()))?;
    }
    if !p.acts.uploads.is_empty() {
        timer.done("files", format!("{} upload(s)", p.acts.uploads.len()));
    }
    if let Some(c) = job.uploads_done {
        c.set_uploaded();
    }
    let held = p.held.take().expect("held until carried out");
    if super::interrupt::interrupted() {
        release(held);
        return Err(err("interrupted")(Cause::Interrupted { partial: true }));
    }
    if p.acts.script.is_empty() {
        release(held);
        return Ok(vec![]);
    }
    run_script(ctx, host, name, held, &p.acts, &p.planned, timer)
}

/// The health gate after a (re)start; when the node does not come back, halt the apply and
/// (unless --no-rollback) converge the host back to the generation it had.
#[allow(clippy::too_many_arguments)]
fn confirm_or_go_back(ctx: &Ctx, host: &mut dyn Host, job: &Job, p: &Planned, drained: Option<&str>, server: Option<&ServerLink>, timeout: Duration, timer: &Timer) -> Result<(), ConvergeError> {
    let name = job.name;
    let want = Desired::new(&p.st, job.role);
    ctx.event(name, EventKind::Step("confirming the node came back (new SSH connection)".into()));
    let k3s = k3s_path(&p.st);
    let old_pid = mainpid_of(&p.outcome.values);
    let node = super::confirm::Node { name, role: job.role, unit: &want.unit_file, k3s: &k3s, old_pid, version: p.st.k3s_version.as_deref() };
    let Err(f) = super::confirm::confirm(ctx, &node, server, timeout) else {
        timer.done("confirm", "the node came back".into());
        return Ok(());
    };
    timer.done("confirm", format!("failed: {}", f.reason));
    ctx.halt(name);
    if ctx.confirm.is_none() {
        // --no-rollback: the node stays as it is, cordoned.
        let left = if drained.is_some() { "not rolled back (--no-rollback); it stays cordoned" } else { "not rolled back (--no-rollback)" };
        return Err(ConvergeError::new(name, "confirm", Cause::NotConfirmed { reason: f.reason, logs: f.logs, rolled_back: left.into() }));
    }
    let (e, back) = go_back(ctx, host, job, &p.st, p.previous.clone(), p.outcome.generation, f, server, timeout);
    if let (true, Some(k), Some(s)) = (back, drained, server) {
        let _ = s.run(&super::upgrade::uncordon_command(k, name));
    }
    Err(e)
}

fn k3s_path(st: &HostState) -> String {
    st.files.iter().find(|f| f.path.ends_with("/k3s")).map(|f| f.path.clone()).unwrap_or_else(|| crate::render::K3S_BIN.to_string())
}

/// The unit's main process before the script restarted it (0: it was not running).
pub(super) fn mainpid_of(values: &[(String, Vec<u8>)]) -> u64 {
    values.iter().rev().find(|(k, _)| k == "mainpid").and_then(|(_, v)| String::from_utf8_lossy(v).trim().parse().ok()).unwrap_or(0)
}

/// The health gate failed: converge the host back to the generation it had before this apply
/// (as a new generation), confirm again, and say what happened.
#[allow(clippy::too_many_arguments)]
fn go_back(
    ctx: &Ctx,
    host: &mut dyn Host,
    job: &Job,
    st: &HostState,
    before: Option<crate::generation::Manifest>,
    made: Option<u64>,
    f: super::confirm::Failure,
    server: Option<&ServerLink>,
    timeout: Duration,
) -> (ConvergeError, bool) {
    let name = job.name;
    let fail = |rolled_back: String| ConvergeError::new(name, "confirm", Cause::NotConfirmed { reason: f.reason.clone(), logs: f.logs.clone(), rolled_back });
    let (Some(prev), Some(made)) = (before, made) else {
        return (fail("no earlier generation to go back to (this was the host's first apply); fix cluster.kdl and apply again".into()), false);
    };
    ctx.event(name, EventKind::Step(format!("rolling back to generation {}", prev.number)));
    let crossed = crate::generation::crosses_minor(prev.k3s.as_deref(), st.k3s_version.as_deref());
    let restore = (crossed && job.role == Role::Server).then(|| crate::generation::snapshot_path(made));
    let r = crate::generation::Rollback { to: prev.clone(), from: made, restore };
    let state = crate::generation::to_state(&prev, st);
    let choose = |_: &Facts| -> Result<HostState, Cause> { Ok(state.clone()) };
    let back = Job { name, role: job.role, candidates: vec![state.clone()], reads: job.reads.clone(), choose: &choose, early: None, rollback: Some(&r), uploads_done: None };
    match converge(ctx, host, &back, server.map(|s| ServerLink { host: s.host, cell: s.cell })) {
        Ok(o) => {
            let now = o.generation.map(|n| n.to_string()).unwrap_or_else(|| "?".into());
            let unit = format!("{}.service", st.service.unit);
            let k3s = k3s_path(&state);
            let node = super::confirm::Node { name, role: job.role, unit: &unit, k3s: &k3s, old_pid: mainpid_of(&o.values), version: state.k3s_version.as_deref() };
            let came_back = super::confirm::confirm(ctx, &node, server, timeout);
            let back = came_back.is_ok();
            let e = fail(format!(
                "rolled back to generation {} (recorded as generation {now}, active now); {}",
                prev.number,
                match came_back {
                    Ok(()) => "the node is Ready again".to_string(),
                    Err(e) => format!("but it is still not Ready: {}", e.reason),
                }
            ));
            (e, back)
        }
        Err(e) => (fail(format!("the rollback to generation {} failed too: {e}", prev.number)), false),
    }
}

/// Start the held lock+facts command and read its head: the lock state and the facts.
fn open(ctx: &Ctx, host: &mut dyn Host, name: &str, q: &FactsQuery) -> Result<(Box<dyn crate::transport::Held>, LockState, Facts), ConvergeError> {
    let err = |c: Cause| ConvergeError::new(name, "lock+facts", c);
    let held = host
        .exec_held(&session::command(ctx.wet, &ctx.owner, q), session::HEAD_END, Some(FACTS_TIMEOUT))
        .map_err(|e| err(e.into()))?;
    if held.ended() {
        // The command stopped before its facts (sudo refused, no shell...): say why.
        let out = held.finish(b"", Some(FACTS_TIMEOUT)).map_err(|e| err(e.into()))?;
        host.check_sudo(&out).map_err(|e| err(e.into()))?;
        return Err(err(Cause::StepFailed { what: "gathering facts".into(), status: out.status, stderr: tail(&out.stderr_str()) }));
    }
    let head = String::from_utf8_lossy(held.head()).into_owned();
    let (lock, facts) = session::parse_head(q, &head).map_err(err)?;
    let facts = match (lock.clone(), facts) {
        (LockState::Locked(owner), _) => {
            release(held);
            return Err(err(Cause::Locked { owner }));
        }
        (LockState::NoFlock, _) | (_, None) => {
            release(held);
            return Err(err(Cause::NoFlock));
        }
        (_, Some(f)) => f,
    };
    if let LockState::Busy(owner) = &lock {
        ctx.event(name, EventKind::Note(format!("an apply is running on this host ({owner}); this plan may be stale")));
    }
    Ok((held, lock, facts))
}

/// Apply, before the server answers: stream the local binaries the early state needs (they do not
/// depend on the token) and record them in `facts` as present; returns them as changes made.
#[allow(clippy::too_many_arguments)]
fn stream_early(
    ctx: &Ctx,
    host: &mut dyn Host,
    held: &mut dyn crate::transport::Held,
    job: &Job,
    q: &FactsQuery,
    early: Render,
    facts: &mut Facts,
    server: Option<&ServerLink>,
) -> Result<Vec<(&'static dyn Phase, Change)>, ConvergeError> {
    let err = |phase: &'static str| move |c: Cause| ConvergeError::new(job.name, phase, c);
    let st0 = early(facts).map_err(err("render"))?;
    let want0 = Desired::new(&st0, job.role);
    // A running node is not touched before its plan: an upgrade must wait for its drain.
    if facts.services.get(&want0.unit_file).is_some_and(|s| s.active == "active" || s.active == "activating") {
        return Ok(Vec::new());
    }
    let seen0 = Observed::new(q, facts.clone());
    let mut made: Vec<(&'static dyn Phase, Change)> = Vec::new();
    for f in st0.files.iter().filter(|f| matches!(f.content, crate::render::Content::Local { .. })) {
        let Some(change) = super::files::file_change(f, &seen0) else { continue };
        if matches!(change, Change::FixMode { .. }) {
            continue;
        }
        let mut acts = Actions::default();
        super::files::Files.apply(&want0, &seen0, 0, &change, &mut acts);
        if let Some(s) = server {
            ctx.event(job.name, EventKind::Step("waiting for the server's upload to finish".into()));
            s.cell.wait_uploaded();
        }
        if super::interrupt::interrupted() {
            // Ctrl-C while waiting: nothing more is sent (the caller reports the host).
            break;
        }
        keep_found(ctx, host, job.name, facts, &[f.path.as_str()])?;
        for u in &acts.uploads {
            upload(ctx, host, Some(&mut *held), job.name, u).map_err(|e| err("files")(e.into()))?;
        }
        facts.files.insert(f.path.clone(), uploaded(f));
        if f.path == q.k3s_binary {
            // What the old binary said no longer holds.
            facts.k3s_version = None;
        }
        made.push((&super::files::Files, change));
    }
    Ok(made)
}

/// For a fresh agent: whether the server still knows a node of its name. A brand-new server
/// knows none (no question asked); without a server nothing is known.
fn ask_server(server: Option<&ServerLink>, info: Option<&ServerInfo>, node: &str) -> Result<Option<bool>, crate::transport::TransportError> {
    match (server, info) {
        (_, Some(i)) if i.new => Ok(Some(false)),
        (Some(s), Some(i)) => {
            let known = s.exec("asking the server", &super::forget::known_probe(&i.k3s, node), false)?;
            Ok(Some(!known.stdout_str().trim().is_empty()))
        }
        _ => Ok(None),
    }
}

/// Send the apply script on the held command's stdin and read what it did; returns the values it
/// printed (the server's token).
fn run_script(
    ctx: &Ctx,
    host: &mut dyn Host,
    name: &str,
    held: Box<dyn crate::transport::Held>,
    acts: &Actions,
    planned: &[(&'static dyn Phase, Change)],
    timer: &Timer,
) -> Result<Vec<(String, Vec<u8>)>, ConvergeError> {
    let err = |c: Cause| ConvergeError::new(name, "apply", c);
    ctx.event(name, EventKind::Step("running the apply script".into()));
    let text = acts.script.render();
    let out = held.finish(&session::script_input(&text), Some(SCRIPT_TIMEOUT)).map_err(|e| err(e.into()))?;
    host.check_sudo(&out).map_err(|e| err(e.into()))?;
    let stdout = out.stdout_str();
    if stdout.lines().any(|l| l == "@@rv truncated") {
        return Err(err(Cause::ScriptTruncated));
    }
    let r = super::script::parse(&stdout);
    timer.done("apply", format!("script of {} fragment(s), exit status {}", r.started.len(), out.status));
    if let Some((id, status)) = r.failed {
        let (phase, what) = match id.parse::<usize>().ok().and_then(|i| planned.get(i)) {
            Some((p, c)) => (p.name(), c.label()),
            None => ("apply", "recording the managed files".to_string()),
        };
        return Err(ConvergeError::new(name, phase, Cause::StepFailed { what, status, stderr: tail(&out.stderr_str()) }));
    }
    if !r.finished {
        return Err(err(Cause::StepFailed { what: "the apply script".into(), status: out.status, stderr: tail(&out.stderr_str()) }));
    }
    Ok(r.values)
}

/// Stream one local file (compressed when the host can undo it), atomically, verified: as a
/// request on the held lock+facts command when there is one (no second remote command), else on
/// a channel of its own.
fn upload(
    ctx: &Ctx,
    host: &mut dyn Host,
    held: Option<&mut dyn crate::transport::Held>,
    name: &str,
    u: &super::phase::Upload,
) -> Result<crate::transport::UploadOutcome, crate::transport::TransportError> {
    ctx.event(name, EventKind::Step(format!("uploading {}", u.dest.path)));
    let packed = u.codec.and_then(|c| crate::artifact::compressed(&u.local, &u.sha256, c).ok().map(|p| (c, p)));
    if let Some(h) = held {
        let (local, codec) = match &packed {
            Some((c, p)) => (p.as_path(), Some(*c)),
            None => (u.local.as_path(), None),
        };
        if let Some(r) = crate::transport::host::upload_held(h, name, local, codec, &u.sha256, &u.dest) {
            return r;
        }
    }
    match packed {
        Some((c, p)) => host.upload_compressed(&p, c, &u.sha256, &u.dest),
        None => host.upload_pinned(&u.local, &u.sha256, &u.dest),
    }
}

/// The fact of a file just uploaded as desired.
fn uploaded(f: &crate::render::DesiredFile) -> crate::transport::FileFact {
    let mut owner = f.owner.split(':');
    let user = owner.next().unwrap_or("root").to_string();
    crate::transport::FileFact::Present {
        kind: crate::transport::facts::FileKind::Regular,
        mode: f.mode,
        owner: user.clone(),
        group: owner.next().map(str::to_string).unwrap_or(user),
        sha256: Some(f.sha256()),
        link_target: None,
    }
}

/// The last lines of a command's stderr, for an error message.
fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}
