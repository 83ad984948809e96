//! `rvcluster reset`: uninstall k3s from the selected nodes (agents first, in parallel, then the
//! server) and the managed registry from its host, giving back the files each host had before
//! rvcluster (generation 0); and `apply --prune`'s removal of nodes cluster.kdl no longer lists
//! (drain, delete the node and its node-password secret on the server, uninstall the board).
//! The work on a host is `crate::uninstall`; this file asks, orders, reports and updates cluster.lock.

use std::time::Duration;

use clap::Args;
use serde::Serialize;

use super::generations::confirm;
use super::{EXIT_FAILED, EXIT_INVALID, EXIT_OK, Global, Target, load_cluster};
use crate::converge::Ctx;
use crate::lock::{Lock, LockedHost};
use crate::output::Output;
use crate::spec::{Cluster, Node, Role};
use crate::transport::Host;
use crate::uninstall::{self, Drain, Outcome, Spec};

#[derive(Args, Debug)]
pub struct ResetArgs {
    #[command(flatten)]
    pub target: Target,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
    /// Also delete the managed registry's data (its storage directory).
    #[arg(long)]
    pub purge_registry: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// Record host keys never seen before (a changed key is still refused).
    #[arg(long)]
    pub accept_new: bool,
    /// How many agents to reset at once.
    #[arg(long, default_value_t = 32)]
    pub parallel: usize,
}

/// One host to reset and how to reach it.
struct Job<'a> {
    spec: Spec,
    address: String,
    ssh: crate::spec::Ssh,
    /// The node (for its OS profile once its facts are in); None for the registry host.
    node: Option<&'a Node>,
}

#[derive(Debug, Serialize)]
pub struct HostReset {
    pub node: String,
    pub role: &'static str,
    pub address: String,
    pub outcome: Option<Outcome>,
    pub error: Option<String>,
}

fn role_word(spec: &Spec) -> &'static str {
    match spec.kind {
        uninstall::Kind::Server => "server",
        uninstall::Kind::Agent => "agent",
        uninstall::Kind::Registry { .. } => "registry",
    }
}

/// Reset one host over a connection made here (one remote command).
fn reset_host(ctx: &Ctx, job: &Job) -> HostReset {
    let mut r = HostReset { node: job.spec.name.clone(), role: role_word(&job.spec), address: job.address.clone(), outcome: None, error: None };
    let got = ctx.connect_to(&job.spec.name, &job.address, &job.ssh).map_err(|e| format!("cannot reach it: {e}")).and_then(|mut host| {
        let refine = |facts: &crate::transport::Facts, spec: &mut Spec| {
            if let Some(n) = job.node
                && let Ok(os) = crate::converge::node_profile(ctx.profiles, n, facts)
            {
                spec.use_profile(os);
            }
        };
        uninstall::run(&mut host, &job.spec, &ctx.owner, &refine).map_err(|e| e.to_string())
    });
    match got {
        Ok(o) if !o.failed.is_empty() => {
            r.error = Some(format!("some steps failed: {}", o.failed.join("; ")));
            r.outcome = Some(o);
        }
        Ok(o) => r.outcome = Some(o),
        Err(e) => r.error = Some(e),
    }
    r
}

/// Agents in parallel, then the server, then the registry host.
fn run_jobs(ctx: &Ctx, jobs: &[Job], parallel: usize) -> Vec<HostReset> {
    let (agents, rest): (Vec<&Job>, Vec<&Job>) = jobs.iter().partition(|j| j.spec.kind == uninstall::Kind::Agent);
    let mut done = crate::transport::pool(&agents, parallel, |j| reset_host(ctx, j));
    for j in rest.iter().filter(|j| j.spec.kind == uninstall::Kind::Server) {
        done.push(reset_host(ctx, j));
    }
    for j in rest.iter().filter(|j| matches!(j.spec.kind, uninstall::Kind::Registry { .. })) {
        done.push(reset_host(ctx, j));
    }
    done
}

fn print_plan(jobs: &[Job], out: &Output) {
    for j in jobs {
        eprintln!("{}", out.bold(&format!("reset {} ({}, {})", j.spec.name, role_word(&j.spec), j.address)));
        if matches!(j.spec.kind, uninstall::Kind::Registry { .. }) {
            eprintln!("  stop and disable the registry unit");
        } else {
            eprintln!("  stop and disable k3s; kill its containerd-shim processes; unmount /run/k3s and kubelet mounts;");
            eprintln!("  delete cni0, flannel.1 and the veths on cni0; drop KUBE-/CNI-/flannel iptables rules");
        }
        eprintln!("  delete: {}", j.spec.removes().join(", "));
        eprintln!("  and every other file rvcluster wrote there; the files the host had before rvcluster (generation 0) come back");
        if let Some(k) = j.spec.keeps() {
            eprintln!("  keep: {k}");
        }
    }
}

pub fn run(global: &Global, a: &ResetArgs, out: &Output) -> i32 {
    let (profiles, cluster, filter) = match load_cluster(global, &a.target, out) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let declared = |n: &Node| n.profile.as_ref().and_then(|p| profiles.os(&p.value));
    let mut jobs: Vec<Job> = cluster
        .agents()
        .chain(cluster.servers())
        .filter(|n| filter.matches(n))
        .map(|n| Job { spec: Spec::node(&n.name, n.role, declared(n)), address: n.address.clone(), ssh: n.ssh.clone(), node: Some(n) })
        .collect();
    if let Some(r) = cluster.managed_registry()
        && filter.matches_name(&r.name)
    {
        jobs.push(Job { spec: Spec::registry(&r.name, &r.storage, a.purge_registry), address: r.address.clone(), ssh: r.ssh.clone(), node: None });
    }
    if jobs.is_empty() {
        out.error("no host selected");
        return EXIT_INVALID;
    }
    print_plan(&jobs, out);
    let names: Vec<&str> = jobs.iter().map(|j| j.spec.name.as_str()).collect();
    if !confirm(&format!("uninstall k3s/rvcluster from {}?", names.join(", ")), a.yes, out) {
        out.info("nothing was touched");
        return EXIT_INVALID;
    }
    let mut ctx = global.ctx(&cluster, &profiles, true);
    ctx.accept_new = a.accept_new;
    let results = run_jobs(&ctx, &jobs, a.parallel);
    // Agents reset while the server stays: the server forgets them (else they stay NotReady).
    let server_stays = cluster.servers().next().filter(|s| !filter.matches(s));
    let mut notes = Vec::new();
    if let Some(s) = server_stays {
        let gone: Vec<&str> = results.iter().filter(|r| r.role == "agent" && r.error.is_none()).map(|r| r.node.as_str()).collect();
        if !gone.is_empty() {
            match forget_on_server(&ctx, s, &gone, None) {
                Ok(()) => notes.push(format!("server {} no longer lists {}", s.name, gone.join(", "))),
                Err(e) => notes.push(format!("could not delete {} on the server {}: {e}", gone.join(", "), s.name)),
            }
        }
    }
    drop(ctx);
    let reset: Vec<String> = results.iter().filter(|r| r.error.is_none()).map(|r| r.node.clone()).collect();
    forget_in_lock(&cluster, &reset, out);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&results).expect("serializes"));
    } else {
        for r in &results {
            println!("{}", out.bold(&format!("reset {} ({}, {})", r.node, r.role, r.address)));
            if let Some(e) = &r.error {
                println!("  {} {e}", console::style("failed:").red().bold());
            }
            if let Some(o) = &r.outcome {
                if o.was_clean() {
                    println!("  {}", out.dim("nothing of k3s or rvcluster was there"));
                } else {
                    for d in &o.did {
                        println!("  - {d}");
                    }
                    for p in &o.restored {
                        println!("  + restored {p} (generation 0)");
                    }
                }
            }
        }
    }
    for n in notes {
        out.info(&n);
    }
    let failed = results.iter().filter(|r| r.error.is_some()).count();
    out.info(&format!("{} host(s) reset, {failed} failed", results.len() - failed));
    if failed > 0 { EXIT_FAILED } else { EXIT_OK }
}

/// Drop `hosts` from cluster.lock's `hosts` (when there is a lock).
fn forget_in_lock(c: &Cluster, hosts: &[String], out: &Output) {
    let path = crate::lock::path_for(c);
    let Ok(Some(mut lock)) = Lock::read(&path) else { return };
    let before = lock.hosts.len();
    lock.hosts.retain(|h, _| !hosts.contains(h));
    if lock.hosts.len() != before
        && let Err(e) = lock.write(&path)
    {
        out.warn(&format!("cannot write {}: {e}", path.display()));
    }
}

/// On the server: drain each node (when `drain` is given and the server knows it), or delete each
/// node and its node-password secret (when `drain` is None).
fn forget_on_server(ctx: &Ctx, server: &Node, nodes: &[&str], drain: Option<&Drain>) -> Result<(), String> {
    let mut host = ctx.connect(server).map_err(|e| e.to_string())?;
    let k3s = crate::converge::k3s_on(ctx, server, &mut host).map_err(|e| e.to_string())?;
    for n in nodes {
        if let Some(d) = drain {
            let known = host.exec(&uninstall::node_known_command(&k3s, n), None, Some(Duration::from_secs(60))).map_err(|e| e.to_string())?;
            if !known.stdout_str().trim().is_empty() {
                host.exec_ok(&format!("draining {n}"), &uninstall::drain_command(&k3s, n, d), None, Some(d.timeout + Duration::from_secs(60)))
                    .map_err(|e| e.to_string())?;
            }
            continue;
        }
        host.exec_ok(&format!("deleting node {n}"), &crate::converge::forget::delete_command(&k3s, n), None, Some(Duration::from_secs(120)))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// A node cluster.lock knows and cluster.kdl no longer lists.
#[derive(Debug, Clone, Serialize)]
pub struct Removed {
    pub node: String,
    pub address: Option<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
    /// `server` or `agent` (None: an older lock).
    pub role: Option<String>,
}

/// The nodes `apply --prune` would remove: in cluster.lock's `hosts`, not in cluster.kdl (neither
/// a node nor the registry host), and not a registry host by the lock's record.
pub fn removed_nodes(c: &Cluster) -> Vec<Removed> {
    let Ok(Some(lock)) = Lock::read(&crate::lock::path_for(c)) else { return vec![] };
    lock.hosts
        .iter()
        .filter(|(name, h)| c.node(name).is_none() && c.registry.as_ref().is_none_or(|r| &r.name != *name) && h.role.as_deref() != Some("registry"))
        .map(|(name, h)| Removed { node: name.clone(), address: h.address.clone(), user: h.user.clone(), port: h.port, role: h.role.clone() })
        .collect()
}

/// Say what a prune does: `plan` (None) shows it, `apply` without --prune (Some(false)) warns.
pub fn show_removed(removed: &[Removed], prune: Option<bool>, out: &Output) {
    for r in removed {
        match prune {
            None => {
                println!(
                    "{}",
                    out.bold(&format!("remove node {} (drain, delete the node and its node-password secret, uninstall k3s from the board)", r.node))
                );
                println!("  {}", out.dim("in cluster.lock, no longer in cluster.kdl: `apply --prune` does it, plain `apply` leaves it"));
            }
            Some(false) => out.warn(&format!(
                "node {} is in cluster.lock but no longer in cluster.kdl; left as it is (`apply --prune` drains it, deletes it \
                 and its node-password secret, and uninstalls k3s from its board)",
                r.node
            )),
            Some(true) => {}
        }
    }
}

/// At the end of a successful apply (cluster.lock written): warn about removed nodes, or with
/// `--prune` remove them. False when a removal failed.
pub fn after_apply(
    global: &Global,
    c: &Cluster,
    profiles: &crate::profile::Profiles,
    filter: &crate::spec::filter::NodeFilter,
    a: &super::plan::ApplyArgs,
    out: &Output,
) -> bool {
    let removed: Vec<Removed> = removed_nodes(c).into_iter().filter(|r| filter.matches_name(&r.node)).collect();
    if removed.is_empty() {
        return true;
    }
    if !a.prune {
        show_removed(&removed, Some(false), out);
        return true;
    }
    let mut ctx = global.ctx(c, profiles, true);
    ctx.accept_new = a.accept_new;
    prune(&ctx, &removed, &Drain { timeout: a.drain_timeout, force: a.force_drain }, out)
}

/// What `apply --prune` did for one removed node.
#[derive(Debug, Serialize)]
pub struct Pruned {
    pub node: String,
    /// The board's uninstall (None: not reached).
    pub board: Option<HostReset>,
    pub error: Option<String>,
}

/// `apply --prune`, after every other host converged: per removed node, drain it and delete it
/// (and its node-password secret) on the server, uninstall k3s from its board when reachable
/// (an unreachable board is deleted from the cluster anyway, and reported), then drop it from
/// cluster.lock. The board is reached at the address, user and port cluster.lock recorded, with
/// the rest of the server node's ssh settings (identity, proxy jump): the cluster file no longer
/// says how. Returns false when something failed.
pub fn prune(ctx: &Ctx, removed: &[Removed], drain: &Drain, out: &Output) -> bool {
    let Some(server) = ctx.cluster.servers().next() else { return true };
    let mut ok = true;
    let mut gone = Vec::new();
    for r in removed {
        out.info(&format!("removing node {}", r.node));
        // Reachable? Only then is it drained (an unreachable kubelet never confirms evictions).
        let job = r.address.as_ref().map(|addr| {
            let mut ssh = server.ssh.clone();
            ssh.user = r.user.clone().or(ssh.user);
            ssh.port = r.port.or(ssh.port);
            ssh.host_key = None;
            let role = if r.role.as_deref() == Some("server") { Role::Server } else { Role::Agent };
            Job { spec: Spec::node(&r.node, role, None), address: addr.clone(), ssh, node: None }
        });
        let reachable = job.as_ref().is_some_and(|j| ctx.connect_to(&j.spec.name, &j.address, &j.ssh).is_ok());
        if !reachable {
            out.warn(&format!(
                "node {}: {}; it is deleted from the cluster without a drain, k3s stays on the board",
                r.node,
                if job.is_some() { "the board cannot be reached" } else { "cluster.lock does not say how to reach its board (written by an older rvcluster)" }
            ));
        }
        // Drain, uninstall the board (its kubelet would register the node again), then delete
        // the node and its node-password secret.
        let mut p = Pruned { node: r.node.clone(), board: None, error: None };
        if let (true, Some(j)) = (reachable, &job) {
            if let Err(e) = forget_on_server(ctx, server, &[r.node.as_str()], Some(drain)) {
                p.error = Some(e);
            } else {
                let b = reset_host(ctx, j);
                if let Some(e) = &b.error {
                    p.error = Some(format!("uninstalling k3s from the board: {e}"));
                }
                p.board = Some(b);
            }
        }
        if p.error.is_none()
            && let Err(e) = forget_on_server(ctx, server, &[r.node.as_str()], None)
        {
            p.error = Some(e);
        }
        match &p.error {
            Some(e) => {
                ok = false;
                out.error(&format!("node {}: {e}", r.node));
            }
            None => {
                out.info(&format!("node {} removed{}", r.node, if reachable { " and its board reset" } else { " from the cluster" }));
                gone.push(r.node.clone());
            }
        }
        if !reachable {
            ok = false;
        }
    }
    forget_in_lock(ctx.cluster, &gone, out);
    ok
}

/// The `hosts` entry apply records for a host of cluster.kdl: its generation and how to reach it.
pub fn locked_host(c: &Cluster, name: &str, generation: u64, manifest: &str) -> LockedHost {
    let (address, ssh, role) = match c.node(name) {
        Some(n) => (Some(n.address.clone()), Some(&n.ssh), Some(if n.role == Role::Server { "server" } else { "agent" })),
        None => match c.registry.as_ref().filter(|r| r.name == name) {
            Some(r) => (Some(r.address.clone()), Some(&r.ssh), Some("registry")),
            None => (None, None, None),
        },
    };
    LockedHost {
        generation,
        manifest: manifest.to_string(),
        address,
        user: ssh.and_then(|s| s.user.clone()),
        port: ssh.and_then(|s| s.port),
        role: role.map(str::to_string),
    }
}
