//! `rvcluster plan` and `rvcluster apply`: one code path (converge), each step dry or wet.
//! Order: closure check, registry host, image push, server, agents, then (apply) wait until every
//! node and pod is Ready or a diagnosis says why not.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::Args;
use serde::Serialize;

use super::{EXIT_CHANGES, EXIT_FAILED, EXIT_INVALID, EXIT_OK, Global, Target, load_cluster};
use crate::converge::{self, HostPlan};
use crate::output::Output;
use crate::profile::Profiles;
use crate::spec::Cluster;
use crate::verify::{self, Health, WaitResult};

#[derive(Args, Debug)]
pub struct PlanArgs {
    #[command(flatten)]
    pub target: Target,
    /// Print the plan as JSON.
    #[arg(long)]
    pub json: bool,
    /// Exit 3 when changes are pending, 0 when the plan is empty.
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Record host keys never seen before (a changed key is still refused).
    #[arg(long)]
    pub accept_new: bool,
    /// How many hosts to work on at once (each board does its own hashing, unpacking and k3s
    /// start, so more at once is faster until the uplink is full; k0sctl defaults to 30).
    #[arg(long, default_value_t = 32)]
    pub parallel: usize,
    /// Report images no node can pull, but do not fail the plan for them.
    #[arg(long)]
    pub skip_closure_check: bool,
    /// Allow going back to an older k3s patch release of the same minor version.
    #[arg(long)]
    pub allow_downgrade: bool,
}

#[derive(Args, Debug)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub target: Target,
    /// Record host keys never seen before (a changed key is still refused).
    #[arg(long)]
    pub accept_new: bool,
    /// How many hosts to work on at once (each board does its own hashing, unpacking and k3s
    /// start, so more at once is faster until the uplink is full; k0sctl defaults to 30).
    #[arg(long, default_value_t = 32)]
    pub parallel: usize,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// Do not wait for nodes and pods to become Ready.
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for every pod to be Ready: 90 (seconds), 90s, 5m, 1h30m (as kubectl --timeout).
    #[arg(long, default_value = "10m", value_name = "DURATION", value_parser = super::duration::parse)]
    pub timeout: Duration,
    /// Refuse to run when the k3s binary or an image resolves differently from cluster.lock.
    #[arg(long)]
    pub locked: bool,
    /// Apply even when the closure check finds images no node can pull (to see what kubectl says).
    #[arg(long)]
    pub skip_closure_check: bool,
    /// No health gate: do not confirm that a restarted node comes back, never roll it back.
    #[arg(long)]
    pub no_rollback: bool,
    /// How long a restarted node has to come back (reachable over a new SSH connection, unit
    /// active, node Ready, the server's /readyz ok) before it is rolled back to its previous generation.
    #[arg(long, default_value = "120s", value_name = "DURATION", value_parser = super::duration::parse)]
    pub confirm_timeout: Duration,
    /// Agents out of service at once while k3s restarts on them: N or N% of the agents (at least 1).
    #[arg(long, default_value = "10%", value_name = "N|N%")]
    pub max_unavailable: String,
    /// How long `kubectl drain` may take per agent before the upgrade stops.
    #[arg(long, default_value = "300s", value_name = "DURATION", value_parser = super::duration::parse)]
    pub drain_timeout: Duration,
    /// Drain even pods without a controller (they are deleted, not recreated).
    #[arg(long)]
    pub force_drain: bool,
    /// Restart agents without cordoning and draining them first.
    #[arg(long)]
    pub no_drain: bool,
    /// Allow going back to an older k3s patch release of the same minor version.
    #[arg(long)]
    pub allow_downgrade: bool,
    /// Remove the nodes cluster.lock knows and cluster.kdl no longer lists: drain, delete the node
    /// and its node-password secret, uninstall k3s from the board.
    #[arg(long)]
    pub prune: bool,
}

#[derive(Serialize)]
struct Report<'a> {
    hosts: &'a [HostPlan],
    images: Option<serde_json::Value>,
    closure: Option<serde_json::Value>,
    health: Option<&'a Health>,
    /// managed, external or none.
    registry_mode: &'static str,
    /// An external registry's `/v2/` check: {"ok": line} or {"error": line}.
    registry_check: Option<serde_json::Value>,
    /// Air-gap image tarballs every node gets.
    tarballs: Vec<&'a crate::render::airgap::Tarball>,
    /// The order k3s restarts follow (server, then agents drained N at a time), a line per step.
    order: Vec<String>,
    /// Nodes cluster.lock knows and cluster.kdl no longer lists (`apply --prune` removes them).
    remove: Vec<super::reset::Removed>,
}

/// An external registry's `/v2/` check (None for a managed registry or none); no SSH, ever.
fn external_check(c: &Cluster, pw: Option<&str>) -> Option<Result<String, String>> {
    c.registry.as_ref().filter(|r| r.external).map(|_| crate::images::check_external(c, pw).map_err(|e| e.to_string()))
}

fn check_json(r: &Option<Result<String, String>>) -> Option<serde_json::Value> {
    r.as_ref().map(|r| match r {
        Ok(l) => serde_json::json!({ "ok": l }),
        Err(e) => serde_json::json!({ "error": e.to_string() }),
    })
}

/// The image tarballs (built into the local cache when missing), with a line each.
fn prepare_tarballs(c: &Cluster, locked: &BTreeMap<String, String>, out: &Output) -> Result<Vec<(crate::render::airgap::Tarball, crate::airgap::Origin)>, i32> {
    let n = c.tarball_images().count();
    if n == 0 {
        return Ok(Vec::new());
    }
    out.detail(&format!("image tarballs for {n} image(s)"));
    for i in c.tarball_images().filter(|i| i.reference.tag.as_deref() == Some("latest") && i.reference.digest.is_none()) {
        out.warn(&format!(
            "image {} is `:latest`: kubelet pulls such images with imagePullPolicy Always even when the node imported \
             the tarball; pin another tag (or set imagePullPolicy: IfNotPresent)",
            i.reference
        ));
    }
    crate::images::tarballs(c, locked).map_err(|e| {
        out.error(&format!("image tarballs: {e}"));
        EXIT_FAILED
    })
}

fn print_hosts(plans: &[HostPlan], wet: bool, out: &Output) {
    for p in plans {
        let head = format!("{} {} ({}, {})", if wet { "applied" } else { "host" }, p.node, p.role, p.address);
        println!("{}", out.bold(&head));
        if let Some(e) = &p.error {
            println!("  {} {e}", console::style("failed:").red().bold());
            // The cause's miette code and help (a transport error's advice, say) reach the user.
            let d: &dyn miette::Diagnostic = &e.cause;
            if let Some(help) = d.help() {
                println!("  {} {help}", console::style("help:").cyan());
            }
            if let Some(code) = d.code() {
                println!("  {}", out.dim(&format!("({code})")));
            }
        } else if p.changes.is_empty() {
            println!("  {}", out.dim("no changes"));
        }
        for c in &p.changes {
            println!("  {}", c.describe());
        }
    }
}

/// When k3s restarts on running nodes: the order apply follows (docs/upgrades.md §3), a line per step.
fn order_lines(plans: &[HostPlan]) -> Vec<String> {
    let restarts = |p: &HostPlan| p.changes.iter().any(|c| matches!(c, converge::Change::Restart { .. }));
    let server = plans.iter().find(|p| p.role == converge::HostRole::Server && restarts(p));
    let agents: Vec<&str> = plans.iter().filter(|p| p.role == converge::HostRole::Agent && restarts(p)).map(|p| p.node.as_str()).collect();
    let mut out = Vec::new();
    if let Some(s) = server {
        out.push(format!("{}: restart, then wait until the API answers /readyz and the node is Ready with the new version", s.node));
    }
    if !agents.is_empty() {
        out.push(format!(
            "agents, --max-unavailable at a time (default 10%, at least 1): cordon, drain, restart, Ready with the new version, uncordon: {}",
            agents.join(", ")
        ));
    }
    out
}

fn print_order(plans: &[HostPlan], out: &Output) {
    let lines = order_lines(plans);
    if lines.is_empty() {
        return;
    }
    println!("{}", out.bold("order"));
    for (i, l) in lines.iter().enumerate() {
        println!("  {}. {l}", i + 1);
    }
}

fn summary(plans: &[HostPlan], wet: bool, out: &Output) {
    let t = converge::totals(plans);
    out.info(&format!(
        "{} hosts, {} {}, {} failed",
        t["hosts"],
        t["changes"],
        if wet { "changes made" } else { "changes pending" },
        t["failed"]
    ));
}

/// One progress line per host on stderr (spinners on a terminal, plain lines otherwise).
fn progress(
    c: &Cluster,
    filter: &crate::spec::filter::NodeFilter,
    out: &Output,
) -> (std::sync::mpsc::Sender<crate::transport::Event>, std::thread::JoinHandle<()>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let mut hosts: Vec<String> = c.managed_registry().iter().filter(|r| filter.matches_name(&r.name)).map(|r| r.name.clone()).collect();
    hosts.extend(c.nodes.iter().filter(|n| filter.matches(n)).map(|n| n.name.clone()));
    let mode = if out.quiet { crate::output::ProgressMode::Quiet } else { crate::output::ProgressMode::Auto };
    (tx, crate::output::render_progress(rx, hosts, mode))
}

/// Repositories cluster.lock says the registry holds (blob mounts between them send no bytes).
fn known_repos(c: &Cluster) -> Vec<String> {
    let mut v: Vec<String> = crate::lock::Lock::read(&crate::lock::path_for(c))
        .ok()
        .flatten()
        .map(|l| l.images.values().map(|i| i.repository.clone()).filter(|r| !r.is_empty()).collect())
        .unwrap_or_default();
    v.sort();
    v.dedup();
    v
}

type Prepared = (Profiles, Cluster, crate::spec::filter::NodeFilter, Option<String>);

/// What plan and apply both start from: the validated cluster, the registry's TLS material
/// (generated beside cluster.kdl when asked for) and the registry password.
fn prepare(global: &Global, target: &Target, out: &Output) -> Result<Prepared, i32> {
    let (profiles, mut cluster, filter) = load_cluster(global, target, out)?;
    crate::pki::ensure_registry_tls(&mut cluster).map_err(|e| {
        out.error(&e.to_string());
        EXIT_FAILED
    })?;
    let pw = converge::registry_password(&cluster).map_err(|e| {
        out.error(&format!("registry auth: {e}"));
        EXIT_INVALID
    })?;
    Ok((profiles, cluster, filter, pw))
}

pub fn run_plan(global: &Global, a: &PlanArgs, out: &Output) -> i32 {
    let (profiles, cluster, filter, pw) = match prepare(global, &a.target, out) {
        Ok(x) => x,
        Err(code) => return code,
    };
    // Images with a build block are built (or taken from the build cache) before anything else.
    if let Err(code) = super::image::build_for_push(&cluster, false, out) {
        return code;
    }
    if let Err(code) = version_rules(global, &cluster, &profiles, &filter, a.accept_new, a.allow_downgrade, out) {
        return code;
    }
    let external = external_check(&cluster, pw.as_deref());
    let tarballs = match prepare_tarballs(&cluster, &BTreeMap::new(), out) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let (tx, progress) = progress(&cluster, &filter, out);
    let mut ctx = global.ctx(&cluster, &profiles, false);
    ctx.accept_new = a.accept_new;
    ctx.parallel = a.parallel;
    ctx.events = Some(tx);
    ctx.registry_password = pw.clone();
    ctx.tarballs = tarballs.iter().map(|(t, _)| t.clone()).collect();
    // The closure check, the registry host and the nodes are independent: asked at once.
    let (closure, plans) = std::thread::scope(|sc| {
        let closure = sc.spawn(|| crate::images::closure(&cluster, &profiles, pw.as_deref()));
        let registry = sc.spawn(|| match &cluster.registry {
            Some(r) if filter.matches_name(&r.name) => converge::converge_registry(&ctx),
            _ => None,
        });
        let nodes = converge::run_nodes(&ctx, &|n| filter.matches(n));
        let mut plans: Vec<HostPlan> = registry.join().expect("registry plan").into_iter().collect();
        plans.extend(nodes);
        (closure.join().expect("closure check"), plans)
    });
    drop(ctx);
    let _ = progress.join();
    let push = if cluster.pushed_images().next().is_none() || external.as_ref().is_some_and(|r| r.is_err()) {
        None
    } else {
        let repos = known_repos(&cluster);
        Some(crate::images::push_images(&cluster, pw.as_deref(), false, &BTreeMap::new(), &repos, &crate::event::Discard))
    };
    let push_changes = matches!(&push, Some(Ok((p, _))) if p.images.iter().any(|i| !i.is_noop()));
    if a.json {
        let r = Report {
            hosts: &plans,
            images: push.as_ref().map(|p| match p {
                Ok((plan, _)) => serde_json::to_value(plan).unwrap_or_default(),
                Err(e) => serde_json::json!({ "error": e.to_string() }),
            }),
            closure: serde_json::to_value(&closure).ok(),
            health: None,
            registry_mode: cluster.registry_mode().as_str(),
            registry_check: check_json(&external),
            tarballs: tarballs.iter().map(|(t, _)| t).collect(),
            remove: super::reset::removed_nodes(&cluster),
            order: order_lines(&plans),
        };
        println!("{}", serde_json::to_string_pretty(&r).expect("report serializes"));
    } else {
        if let (Some(r), Some(check)) = (&cluster.registry, &external) {
            println!("{}", out.bold(&format!("registry {} (external, {}: rvcluster never connects over SSH)", r.name, r.address)));
            match check {
                Ok(l) => println!("  {l}"),
                Err(e) => println!("  {} {e}", console::style("failed:").red().bold()),
            }
        }
        print_hosts(&plans, false, out);
        print_order(&plans, out);
        super::reset::show_removed(&super::reset::removed_nodes(&cluster), None, out);
        if !tarballs.is_empty() {
            println!("{}", out.bold("image tarballs (every node)"));
            print!("{}", indent(&crate::images::render_tarballs(&tarballs)));
        }
        match &push {
            Some(Ok((p, _))) => {
                println!("{}", out.bold("images to push"));
                print!("{}", indent(&p.render()));
            }
            Some(Err(e)) => println!("{} {}\n  {e}", out.bold("images to push"), out.dim("(cannot ask the registry yet)")),
            None => {}
        }
        println!("{}", out.bold("images the cluster will pull"));
        print!("{}", indent(&closure.render()));
        summary(&plans, false, out);
    }
    if !closure.is_ok() {
        if a.skip_closure_check {
            out.warn("some images have no linux/riscv64 variant anywhere the boards look (see MISSING above)");
        } else {
            out.error("some images have no linux/riscv64 variant anywhere the boards look (see MISSING above)");
            return EXIT_FAILED;
        }
    }
    if plans.iter().any(|p| p.error.is_some()) || external.as_ref().is_some_and(|r| r.is_err()) {
        EXIT_FAILED
    } else if a.detailed_exitcode && (plans.iter().any(|p| !p.changes.is_empty()) || push_changes) {
        EXIT_CHANGES
    } else {
        EXIT_OK
    }
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("  {l}\n")).collect()
}

/// Exit status of an apply stopped by Ctrl-C or SIGTERM (128 + SIGINT, as shells report it).
pub const EXIT_INTERRUPTED: i32 = 130;

/// After Ctrl-C: which hosts are done, half done and untouched; exit 130.
fn interrupted(plans: &[HostPlan], out: &Output) -> i32 {
    let names = |f: &dyn Fn(&HostPlan) -> bool| {
        let v: Vec<&str> = plans.iter().filter(|p| f(p)).map(|p| p.node.as_str()).collect();
        if v.is_empty() { "none".to_string() } else { v.join(", ") }
    };
    let partial = |p: &HostPlan| matches!(p.error.as_ref().map(|e| &e.cause), Some(converge::Cause::Interrupted { partial: true }));
    let untouched = |p: &HostPlan| matches!(p.error.as_ref().map(|e| &e.cause), Some(converge::Cause::Interrupted { partial: false }));
    out.error("interrupted: no new work was started; the board locks are released");
    eprintln!("  done:       {}", names(&|p| p.error.is_none()));
    eprintln!("  half done:  {}", names(&partial));
    eprintln!("  untouched:  {}", names(&untouched));
    let failed = names(&|p| p.error.is_some() && !partial(p) && !untouched(p));
    if failed != "none" {
        eprintln!("  failed:     {failed}");
    }
    eprintln!("  apply again to finish: no manual step is needed");
    EXIT_INTERRUPTED
}

pub fn run_apply(global: &Global, a: &ApplyArgs, out: &Output) -> i32 {
    converge::interrupt::install();
    let (profiles, cluster, filter, pw) = match prepare(global, &a.target, out) {
        Ok(x) => x,
        Err(code) => return code,
    };
    // Images with a build block are built first (with --locked afresh, never from the cache).
    if let Err(code) = super::image::build_for_push(&cluster, a.locked, out) {
        return code;
    }
    if let Err(code) = version_rules(global, &cluster, &profiles, &filter, a.accept_new, a.allow_downgrade, out) {
        return code;
    }
    // An external registry must answer /v2/ as declared before anything is touched.
    if let (Some(r), Some(check)) = (&cluster.registry, external_check(&cluster, pw.as_deref())) {
        match check {
            Ok(l) => out.info(&format!("registry {} (external): {l}", r.name)),
            Err(e) => {
                out.error(&format!("registry {} (external): {e}; nothing was touched", r.name));
                return EXIT_FAILED;
            }
        }
    }
    out.detail("resolving image sources");
    // What cluster.kdl resolves to now, compared with cluster.lock before anything is touched.
    let lock_path = crate::lock::path_for(&cluster);
    let now = match crate::images::resolved(&cluster) {
        Ok(images) => crate::lock::Lock { k3s: Some(crate::lock::Lock::k3s_from(&cluster)), images, hosts: Default::default() },
        Err(e) => {
            out.error(&e.to_string());
            return EXIT_FAILED;
        }
    };
    let mut locked_digests = BTreeMap::new();
    if a.locked {
        match crate::lock::Lock::read(&lock_path) {
            Ok(Some(old)) => {
                let diff = old.differences(&now);
                if !diff.is_empty() {
                    out.error(&format!("--locked: resolution differs from {}; nothing was touched:", lock_path.display()));
                    for d in diff {
                        eprintln!("  {d}");
                    }
                    return EXIT_FAILED;
                }
                locked_digests = old.images.iter().map(|(k, v)| (k.clone(), v.manifest.clone())).collect();
                let moved = old.moved_hosts(&board_generations(global, &cluster, &profiles, &filter, &old, a.accept_new));
                if !moved.is_empty() {
                    out.error(&format!("--locked: hosts differ from {}; nothing was touched:", lock_path.display()));
                    for d in moved {
                        eprintln!("  {d}");
                    }
                    return EXIT_FAILED;
                }
            }
            Ok(None) => {
                out.error(&format!("--locked: {} does not exist (run apply once without --locked)", lock_path.display()));
                return EXIT_INVALID;
            }
            Err(e) => {
                out.error(&format!("--locked: {e}"));
                return EXIT_INVALID;
            }
        }
    }
    let tarballs = match prepare_tarballs(&cluster, &locked_digests, out) {
        Ok(t) => t,
        Err(code) => return code,
    };
    for l in crate::images::render_tarballs(&tarballs).lines() {
        out.info(&format!("tarball {l}"));
    }
    let (tx, progress) = progress(&cluster, &filter, out);
    let mut ctx = global.ctx(&cluster, &profiles, true);
    ctx.accept_new = a.accept_new;
    ctx.parallel = a.parallel;
    ctx.confirm = (!a.no_rollback).then_some(a.confirm_timeout);
    if !a.no_drain {
        ctx.drain = Some(converge::upgrade::Drain { timeout: a.drain_timeout, force: a.force_drain });
    }
    let agents = cluster.agents().filter(|n| filter.matches(n)).count();
    match converge::upgrade::max_unavailable(&a.max_unavailable, agents) {
        Ok(n) => ctx.slots = converge::upgrade::Slots::new(n),
        Err(e) => {
            out.error(&format!("--max-unavailable: {e}"));
            return EXIT_INVALID;
        }
    }
    ctx.events = Some(tx);
    ctx.registry_password = pw.clone();
    ctx.tarballs = tarballs.iter().map(|(t, _)| t.clone()).collect();
    let mut plans = Vec::new();
    let mut registry_ok = true;
    if let Some(r) = cluster.managed_registry()
        && filter.matches_name(&r.name)
    {
        out.info(&format!("registry host {} ({})", r.name, r.address));
        out.detail("converging the registry host");
        let p = converge::converge_registry(&ctx);
        registry_ok = p.as_ref().is_none_or(|p| p.error.is_none());
        plans.extend(p);
    }
    let mut pushed = None;
    if registry_ok && cluster.pushed_images().next().is_some() && cluster.registry.is_some() {
        out.info(&format!("pushing {} image(s)", cluster.pushed_images().count()));
        out.detail("pushing");
        let sink = crate::event::ToStream {
            host: cluster.registry.as_ref().map(|r| r.name.clone()).unwrap_or_default(),
            tx: ctx.events.clone().expect("apply has a progress stream"),
        };
        match crate::images::push_images(&cluster, pw.as_deref(), true, &locked_digests, &known_repos(&cluster), &sink) {
            Ok((plan, report)) => {
                let sent = plan.images.iter().filter(|i| !i.is_noop()).count();
                out.info(&format!("  images: {sent} pushed, {} already in the registry", plan.images.len() - sent));
                pushed = report
            }
            Err(e) => {
                out.error(&format!("pushing images: {e}"));
                print_hosts(&plans, true, out);
                return EXIT_FAILED;
            }
        }
    }
    out.detail("closure check");
    if !a.skip_closure_check {
        let closure = crate::images::closure(&cluster, &profiles, pw.as_deref());
        if !closure.is_ok() {
            print_hosts(&plans, true, out);
            print!("{}", indent(&closure.render()));
            out.error(
                "some images have no linux/riscv64 variant anywhere the boards look; no node was touched \
                 (port them and add `image` entries, disable the addon, or --skip-closure-check to see what kubectl says)",
            );
            return EXIT_FAILED;
        }
    }
    out.info("nodes");
    out.detail("converging nodes");
    plans.extend(converge::run_nodes(&ctx, &|n| filter.matches(n)));
    drop(ctx);
    let _ = progress.join();
    if !a.json {
        print_hosts(&plans, true, out);
    }
    if converge::interrupt::interrupted() {
        return interrupted(&plans, out);
    }
    if plans.iter().any(|p| p.error.is_some()) {
        summary(&plans, true, out);
        return EXIT_FAILED;
    }
    let mut now = now;
    now.hosts = crate::lock::Lock::read(&lock_path).ok().flatten().map(|l| l.hosts).unwrap_or_default();
    for p in &plans {
        if let Some(g) = &p.generation {
            now.hosts.insert(p.node.clone(), super::reset::locked_host(&cluster, &p.node, g.number, &g.manifest));
        }
    }
    match now.write(&lock_path) {
        Ok(true) => out.info(&format!("wrote {}", lock_path.display())),
        Ok(false) => {}
        Err(e) => out.warn(&format!("cannot write {}: {e}", lock_path.display())),
    }
    let mut health = None;
    let mut code = EXIT_OK;
    // Nodes cluster.kdl no longer lists (issue 13 item 3): removed only with --prune.
    if !super::reset::after_apply(global, &cluster, &profiles, &filter, a, out) {
        code = EXIT_FAILED;
    }
    if !a.no_wait {
        match wait_ready(global, &cluster, &profiles, pw.as_deref(), a.accept_new, a.timeout, out) {
            Ok(h) => health = Some(h),
            Err((h, c)) => {
                health = h;
                code = c;
            }
        }
    }
    if a.json {
        let r = Report {
            hosts: &plans,
            images: pushed.as_ref().and_then(|p| serde_json::to_value(p).ok()),
            closure: None,
            health: health.as_ref(),
            registry_mode: cluster.registry_mode().as_str(),
            registry_check: None,
            tarballs: tarballs.iter().map(|(t, _)| t).collect(),
            remove: super::reset::removed_nodes(&cluster),
            order: order_lines(&plans),
        };
        println!("{}", serde_json::to_string_pretty(&r).expect("report serializes"));
    }
    summary(&plans, true, out);
    code
}

/// The k3s version rules (no skipped minor, no downgrade, agents never ahead of the server),
/// checked against what the boards run before anything is touched; asked only when cluster.kdl's
/// release differs from the one cluster.lock recorded (one command per node then).
fn version_rules(
    global: &Global,
    c: &Cluster,
    profiles: &Profiles,
    filter: &crate::spec::filter::NodeFilter,
    accept_new: bool,
    allow_downgrade: bool,
    out: &Output,
) -> Result<(), i32> {
    let locked = crate::lock::Lock::read(&crate::lock::path_for(c)).ok().flatten().and_then(|l| l.k3s).map(|k| k.version);
    if locked.as_deref() == Some(c.k3s.version.as_str()) {
        return Ok(());
    }
    let mut ctx = global.ctx(c, profiles, false);
    ctx.accept_new = accept_new;
    let nodes: Vec<&crate::spec::Node> = c.nodes.iter().collect();
    let answers = ctx.ask_nodes(&nodes, &converge::upgrade::running_command(crate::render::K3S_BIN));
    let running: Vec<converge::upgrade::Running> = nodes
        .iter()
        .zip(answers)
        .map(|(n, o)| converge::upgrade::Running {
            node: n.name.clone(),
            role: n.role,
            version: o.and_then(|o| converge::upgrade::parse_running(&o.stdout_str())),
            selected: filter.matches(n),
        })
        .collect();
    let broken = converge::upgrade::check(&c.k3s.version, &running, allow_downgrade);
    if broken.is_empty() {
        return Ok(());
    }
    out.error(&format!("k3s {} cannot be installed as asked; nothing was touched:", c.k3s.version));
    for b in broken {
        eprintln!("  {b}");
    }
    Err(EXIT_INVALID)
}

/// `--locked`: the current generation of every selected host the lock knows (one command each).
fn board_generations(
    global: &Global,
    c: &Cluster,
    profiles: &Profiles,
    filter: &crate::spec::filter::NodeFilter,
    lock: &crate::lock::Lock,
    accept_new: bool,
) -> BTreeMap<String, Option<(u64, String)>> {
    let mut ctx = global.ctx(c, profiles, false);
    ctx.accept_new = accept_new;
    let nodes: Vec<&crate::spec::Node> = c.nodes.iter().filter(|n| filter.matches(n) && lock.hosts.contains_key(&n.name)).collect();
    let cat = format!("cat {} 2>/dev/null; true", crate::transport::cmd::quote(crate::generation::CURRENT));
    // An unreachable host is left out here: apply reports it as it reaches it.
    nodes
        .iter()
        .zip(ctx.ask_nodes(&nodes, &cat))
        .filter_map(|(n, o)| {
            let bytes = o?.stdout;
            let m = serde_json::from_slice::<crate::generation::Manifest>(&bytes).ok();
            Some((n.name.clone(), m.map(|m| (m.number, crate::render::sha256_hex(&bytes)))))
        })
        .collect()
}

type WaitErr = (Option<Health>, i32);

/// After apply or rollback: wait until every node and pod is Ready, or say why not.
pub fn wait_ready(
    global: &Global,
    c: &Cluster,
    profiles: &Profiles,
    pw: Option<&str>,
    accept_new: bool,
    timeout: Duration,
    out: &Output,
) -> Result<Health, WaitErr> {
    let Some(server) = c.servers().next() else { return Err((None, EXIT_FAILED)) };
    let mut ctx = global.ctx(c, profiles, false);
    ctx.accept_new = accept_new;
    let mut host = ctx.connect(server).map_err(|e| {
        out.error(&format!("cannot reach the server to verify: {e}"));
        (None, EXIT_FAILED)
    })?;
    out.info(&format!("waiting for {} node(s) and every pod to be Ready (timeout {})", c.nodes.len(), super::duration::show(timeout)));
    let mut last_line = String::new();
    let k3s = converge::k3s_on(&ctx, server, &mut host).map_err(|e| {
        out.error(&format!("server {}: {e}", server.name));
        (None, EXIT_FAILED)
    })?;
    let mut srv = verify::Server { host: &mut host, k3s };
    let result = verify::wait(&mut srv, c.nodes.len(), timeout, Duration::from_secs(2), &mut |h| {
        let pending: Vec<&str> = h.problems.iter().map(|p| p.pod.as_str()).take(4).collect();
        let line = format!(
            "  nodes {}/{} Ready, pods {}/{} Ready{}",
            h.nodes_ready,
            h.nodes_total,
            h.pods_ok,
            h.pods_total,
            if pending.is_empty() { String::new() } else { format!("; waiting for {}", pending.join(", ")) }
        );
        if line != last_line {
            out.info(&line);
            last_line = line;
        }
    });
    match result {
        WaitResult::Ready(h) => {
            out.info(&format!("every node and pod is Ready ({} nodes, {} pods)", h.nodes_total, h.pods_total));
            Ok(h)
        }
        WaitResult::Stuck(h) => {
            print_diagnosis(c, profiles, pw, &h, Some(&mut srv), out);
            Err((Some(h), EXIT_FAILED))
        }
        WaitResult::TimedOut(_) if converge::interrupt::interrupted() => {
            out.error("interrupted while waiting for Ready: every host was converged; `rvcluster status` shows the cluster");
            Err((None, EXIT_INTERRUPTED))
        }
        WaitResult::TimedOut(h) => {
            out.error(&format!("timed out after {}", super::duration::show(timeout)));
            if let Some(h) = &h {
                print_diagnosis(c, profiles, pw, h, Some(&mut srv), out);
            }
            Err((h, EXIT_FAILED))
        }
    }
}

/// Per failing pod: namespace/name, node, the cause, and for images where containerd looked.
pub fn print_diagnosis(
    c: &Cluster,
    profiles: &Profiles,
    pw: Option<&str>,
    h: &Health,
    mut server: Option<&mut verify::Server>,
    out: &Output,
) {
    for n in &h.not_ready_nodes {
        out.error(&format!(
            "node {} is NotReady: {}{}",
            n.name,
            n.reason.clone().unwrap_or_default(),
            n.message.as_ref().map(|m| format!(" ({m})")).unwrap_or_default()
        ));
    }
    let mut explained: Vec<String> = Vec::new();
    for p in &h.problems {
        eprintln!(
            "{} {} on {}: {}",
            console::style("pod").red().bold(),
            p.pod,
            p.node.clone().unwrap_or_else(|| "(no node)".into()),
            p.cause.summary()
        );
        if let (verify::Cause::CrashLoop { container, .. }, Some(host)) = (&p.cause, server.as_deref_mut()) {
            let (ns, name) = p.pod.split_once('/').unwrap_or(("default", &p.pod));
            for l in verify::last_logs(host, ns, name, container, 5) {
                eprintln!("    | {l}");
            }
        }
        if let Some(img) = p.cause.image() {
            if explained.iter().any(|e| e == img) {
                eprintln!("    (same image as above)");
                continue;
            }
            explained.push(img.to_string());
            for l in crate::images::explain(c, profiles, pw, img).lines() {
                eprintln!("    {l}");
            }
        }
    }
}
