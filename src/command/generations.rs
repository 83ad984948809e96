//! `rvcluster generations`, `diff`, `rollback` and `gc`: what each apply made of a host
//! (docs/generations.md), the difference between two generations, going back to one (a NEW
//! generation, history is never rewritten), and collecting old ones. The work lives in
//! src/generation (format, fragments) and src/converge (a rollback is a converge whose desired
//! state is a generation).

use std::time::Duration;

use clap::Args;
use serde::Serialize;

use super::{EXIT_FAILED, EXIT_INVALID, EXIT_OK, Global, Target, load_cluster};
use crate::generation::{self, History, Manifest};
use crate::output::Output;
use crate::spec::{Cluster, Node};
use crate::transport::Host;

#[derive(Args, Debug)]
pub struct GenerationsArgs {
    #[command(flatten)]
    pub target: Target,
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
    /// Record host keys never seen before (a changed key is still refused).
    #[arg(long)]
    pub accept_new: bool,
}

#[derive(Args, Debug)]
pub struct DiffArgs {
    /// The cluster description.
    #[arg(value_name = "FILE")]
    pub file: std::path::PathBuf,
    /// The node whose generations are compared.
    #[arg(long, value_name = "NODE")]
    pub on: String,
    /// The older generation.
    pub a: u64,
    /// The newer generation (default: the current one).
    pub b: Option<u64>,
    #[arg(long)]
    pub accept_new: bool,
}

#[derive(Args, Debug)]
pub struct RollbackArgs {
    #[command(flatten)]
    pub target: Target,
    /// The generation to go back to (default: the one before the current one, per host).
    #[arg(long)]
    pub to: Option<u64>,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
    #[arg(long)]
    pub accept_new: bool,
    /// Do not wait for nodes and pods to become Ready.
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for every pod to be Ready: 90 (seconds), 90s, 5m (as kubectl --timeout).
    #[arg(long, default_value = "10m", value_name = "DURATION", value_parser = super::duration::parse)]
    pub timeout: Duration,
}

#[derive(Args, Debug)]
pub struct GcArgs {
    #[command(flatten)]
    pub target: Target,
    /// Generations to keep per host besides generation 0 (default: cluster.kdl's `generations keep=`).
    #[arg(long)]
    pub keep: Option<u32>,
    #[arg(long)]
    pub accept_new: bool,
}

/// The nodes a command acts on, server first.
fn selected<'c>(c: &'c Cluster, filter: &crate::spec::filter::NodeFilter) -> Vec<&'c Node> {
    c.servers().chain(c.agents()).filter(|n| filter.matches(n)).collect()
}

/// Every selected node's history, read at once (one command per host).
fn histories(global: &Global, c: &Cluster, profiles: &crate::profile::Profiles, nodes: &[&Node], accept_new: bool) -> Vec<(String, Result<History, String>)> {
    let mut ctx = global.ctx(c, profiles, false);
    ctx.accept_new = accept_new;
    crate::transport::pool(nodes, 8, |n| {
        let got = ctx.connect(n).map_err(|e| e.to_string()).and_then(|mut h| generation::read_all(&mut h).map_err(|e| e.to_string()));
        (n.name.clone(), got)
    })
}

/// `2026-11-30 20:10:05` (UTC) from unix seconds.
pub fn utc(t: u64) -> String {
    crate::build::config::rfc3339(t).trim_end_matches('Z').replacen('T', " ", 1)
}

#[derive(Serialize)]
struct HostGenerations<'a> {
    node: &'a str,
    current: Option<u64>,
    store_kib: u64,
    generations: Vec<GenLine<'a>>,
    error: Option<&'a str>,
}

#[derive(Serialize)]
struct GenLine<'a> {
    number: u64,
    time: u64,
    k3s: Option<&'a str>,
    reason: &'a str,
    user: &'a str,
    changed: String,
    current: bool,
    files: usize,
}

fn lines(h: &History) -> Vec<GenLine<'_>> {
    let mut prev: Option<&Manifest> = None;
    h.generations
        .iter()
        .map(|m| {
            let l = GenLine {
                number: m.number,
                time: m.time,
                k3s: m.k3s.as_deref(),
                reason: &m.reason,
                user: &m.user,
                changed: generation::summary(prev, m),
                current: h.current == Some(m.number),
                files: m.files.len(),
            };
            prev = Some(m);
            l
        })
        .collect()
}

pub fn run_generations(global: &Global, a: &GenerationsArgs, out: &Output) -> i32 {
    let (profiles, cluster, filter) = match load_cluster(global, &a.target, out) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let nodes = selected(&cluster, &filter);
    let got = histories(global, &cluster, &profiles, &nodes, a.accept_new);
    let report: Vec<HostGenerations> = got
        .iter()
        .map(|(n, r)| match r {
            Ok(h) => HostGenerations { node: n, current: h.current, store_kib: h.store_kib, generations: lines(h), error: None },
            Err(e) => HostGenerations { node: n, current: None, store_kib: 0, generations: vec![], error: Some(e) },
        })
        .collect();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report).expect("serializes"));
    } else {
        for h in &report {
            println!("{}", out.bold(&format!("{} (store {:.1} MiB)", h.node, h.store_kib as f64 / 1024.0)));
            if let Some(e) = h.error {
                println!("  {} {e}", console::style("failed:").red().bold());
                continue;
            }
            if h.generations.is_empty() {
                println!("  {}", out.dim("no generations (never applied)"));
            }
            for g in &h.generations {
                println!(
                    "  {} {:>3}  {}  {:<14} {:<16} {}",
                    if g.current { "*" } else { " " },
                    g.number,
                    utc(g.time),
                    g.k3s.unwrap_or("-"),
                    g.reason,
                    g.changed
                );
            }
        }
    }
    if report.iter().any(|h| h.error.is_some()) { EXIT_FAILED } else { EXIT_OK }
}

pub fn run_diff(global: &Global, a: &DiffArgs, out: &Output) -> i32 {
    let target = Target { file: a.file.clone(), on: Some(a.on.clone()) };
    let (profiles, cluster, filter) = match load_cluster(global, &target, out) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let nodes = selected(&cluster, &filter);
    let [node] = nodes.as_slice() else {
        out.error(&format!("diff compares generations of one node: name it with --on (matched {})", nodes.len()));
        return EXIT_INVALID;
    };
    let mut ctx = global.ctx(&cluster, &profiles, false);
    ctx.accept_new = a.accept_new;
    let mut host = match ctx.connect(node) {
        Ok(h) => h,
        Err(e) => {
            out.error(&format!("{}: {e}", node.name));
            return EXIT_FAILED;
        }
    };
    let h = match generation::read_all(&mut host) {
        Ok(h) => h,
        Err(e) => {
            out.error(&format!("{}: {e}", node.name));
            return EXIT_FAILED;
        }
    };
    let b_num = a.b.or(h.current);
    let pick = |n: Option<u64>| n.and_then(|n| h.get(n));
    let (Some(ga), Some(gb)) = (pick(Some(a.a)), pick(b_num)) else {
        let have: Vec<String> = h.generations.iter().map(|m| m.number.to_string()).collect();
        out.error(&format!(
            "{}: no generation {} (it has: {})",
            node.name,
            if pick(Some(a.a)).is_none() { a.a.to_string() } else { b_num.map(|n| n.to_string()).unwrap_or_else(|| "current".into()) },
            if have.is_empty() { "none".into() } else { have.join(", ") }
        ));
        return EXIT_INVALID;
    };
    let want = generation::diff::wanted(ga, gb);
    let blobs = if want.is_empty() {
        Default::default()
    } else {
        match host.exec(&generation::diff::fetch_command(&want), None, Some(Duration::from_secs(120))) {
            Ok(o) => generation::diff::parse_blobs(&o.stdout_str()),
            Err(e) => {
                out.error(&format!("{}: {e}", node.name));
                return EXIT_FAILED;
            }
        }
    };
    println!("{}", out.bold(&format!("{}: generation {} -> {}", node.name, ga.number, gb.number)));
    print!("{}", generation::diff::render(ga, gb, &blobs));
    EXIT_OK
}

/// Ask on the terminal; without one, refuse (say --yes).
pub fn confirm(question: &str, yes: bool, out: &Output) -> bool {
    if yes {
        return true;
    }
    if !console::Term::stderr().is_term() {
        out.error("not a terminal: pass --yes to go ahead without a question");
        return false;
    }
    eprint!("{question} [y/N] ");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    matches!(line.trim(), "y" | "Y" | "yes")
}

pub fn run_rollback(global: &Global, a: &RollbackArgs, out: &Output) -> i32 {
    crate::converge::interrupt::install();
    let (profiles, cluster, filter) = match load_cluster(global, &a.target, out) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let pw = match crate::converge::registry_password(&cluster) {
        Ok(p) => p,
        Err(e) => {
            out.error(&format!("registry auth: {e}"));
            return EXIT_INVALID;
        }
    };
    let nodes = selected(&cluster, &filter);
    let mut targets = std::collections::BTreeMap::new();
    let mut problems = Vec::new();
    for (name, got) in histories(global, &cluster, &profiles, &nodes, a.accept_new) {
        let h = match got {
            Ok(h) => h,
            Err(e) => {
                problems.push(format!("{name}: {e}"));
                continue;
            }
        };
        let Some(from) = h.current else {
            problems.push(format!("{name}: no generations yet (never applied)"));
            continue;
        };
        let to = match a.to {
            Some(n) => h.get(n),
            None => h.previous(),
        };
        match to {
            Some(m) if m.number == 0 => problems.push(format!(
                "{name}: generation 0 is the board before rvcluster; `rvcluster reset` brings it back"
            )),
            Some(m) if m.number == from => problems.push(format!("{name}: generation {from} is already the current one")),
            Some(m) => {
                let restore = if cluster.servers().any(|s| s.name == name) { generation::snapshot_for(&h, m) } else { None };
                if restore.is_none() && cluster.servers().any(|s| s.name == name) && generation::crosses_minor(h.get(from).and_then(|c| c.k3s.as_deref()), m.k3s.as_deref()) {
                    problems.push(format!(
                        "{name}: going back from k3s {} to {} needs the datastore saved before the upgrade, and no kept generation has it",
                        h.get(from).and_then(|c| c.k3s.clone()).unwrap_or_default(),
                        m.k3s.clone().unwrap_or_default()
                    ));
                    continue;
                }
                targets.insert(name.clone(), generation::Rollback { to: m.clone(), from, restore });
            }
            None => {
                let have: Vec<String> = h.generations.iter().map(|m| m.number.to_string()).collect();
                problems.push(format!(
                    "{name}: no generation {} to go back to (it has: {})",
                    a.to.map(|n| n.to_string()).unwrap_or_else(|| "before the current one".into()),
                    have.join(", ")
                ));
            }
        }
    }
    if !problems.is_empty() {
        for p in &problems {
            out.error(p);
        }
        out.error("nothing was touched");
        return if problems.iter().any(|p| p.contains("no generation") || p.contains("generation 0") || p.contains("already")) { EXIT_INVALID } else { EXIT_FAILED };
    }
    let rolled: Vec<String> = targets.keys().cloned().collect();
    let only = |n: &Node| rolled.contains(&n.name);
    // The plan: the same converge, dry.
    let mut ctx = global.ctx(&cluster, &profiles, false);
    ctx.accept_new = a.accept_new;
    ctx.registry_password = pw.clone();
    ctx.rollback = targets.clone();
    let plans = crate::converge::run_nodes(&ctx, &only);
    for p in &plans {
        if let Some(r) = targets.get(&p.node) {
            println!("{}", out.bold(&format!("rollback {} ({}): generation {} -> {} (recorded as a new generation)", p.node, p.role, r.from, r.to.number)));
            if let Some(f) = &r.restore {
                println!("  ~ restore the datastore saved before the k3s minor version changed ({f}); k3s is stopped meanwhile");
            }
        }
        if let Some(e) = &p.error {
            println!("  {} {e}", console::style("failed:").red().bold());
        }
        for c in &p.changes {
            println!("  {}", c.describe());
        }
    }
    if plans.iter().any(|p| p.error.is_some()) {
        out.error("the rollback cannot be planned on every host; nothing was touched");
        return EXIT_FAILED;
    }
    if !confirm(&format!("roll back {}?", rolled.join(", ")), a.yes, out) {
        out.info("nothing was touched");
        return EXIT_INVALID;
    }
    drop(ctx);
    let mut ctx = global.ctx(&cluster, &profiles, true);
    ctx.accept_new = a.accept_new;
    ctx.registry_password = pw.clone();
    ctx.rollback = targets;
    let plans = crate::converge::run_nodes(&ctx, &only);
    drop(ctx);
    let mut failed = false;
    for p in &plans {
        match &p.error {
            Some(e) => {
                failed = true;
                out.error(&format!("{}: {e}", p.node));
            }
            None => out.info(&format!("{}: {} change(s) made", p.node, p.changes.len())),
        }
    }
    if failed {
        return EXIT_FAILED;
    }
    if a.no_wait {
        return EXIT_OK;
    }
    match super::plan::wait_ready(global, &cluster, &profiles, pw.as_deref(), a.accept_new, a.timeout, out) {
        Ok(_) => {
            out.info("rolled back; `rvcluster plan` shows how the hosts now differ from cluster.kdl");
            EXIT_OK
        }
        Err((_, code)) => code,
    }
}

pub fn run_gc(global: &Global, a: &GcArgs, out: &Output) -> i32 {
    let (profiles, cluster, filter) = match load_cluster(global, &a.target, out) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let keep = a.keep.unwrap_or(cluster.generations_keep).max(1);
    let nodes = selected(&cluster, &filter);
    let mut ctx = global.ctx(&cluster, &profiles, true);
    ctx.accept_new = a.accept_new;
    let results = crate::transport::pool(&nodes, 8, |n| {
        let mut h = ctx.connect(n).map_err(|e| e.to_string())?;
        let before = generation::read_all(&mut h).map_err(|e| e.to_string())?;
        let Some(cur) = before.current else { return Ok((0usize, 0u64, 0u64)) };
        let command = generation::gc_held_command(cur, keep);
        h.exec_ok("collecting generations", &command, None, Some(Duration::from_secs(300))).map_err(|e| e.to_string())?;
        let after = generation::read_all(&mut h).map_err(|e| e.to_string())?;
        Ok::<_, String>((before.generations.len() - after.generations.len(), before.store_kib, after.store_kib))
    });
    let mut failed = false;
    for (n, r) in nodes.iter().zip(results) {
        match r {
            Ok((gone, b, a2)) => out.info(&format!(
                "{}: {gone} generation(s) removed, store {:.1} MiB -> {:.1} MiB (keeps the last {keep} and generation 0)",
                n.name,
                b as f64 / 1024.0,
                a2 as f64 / 1024.0
            )),
            Err(e) => {
                failed = true;
                out.error(&format!("{}: {e}", n.name));
            }
        }
    }
    if failed { EXIT_FAILED } else { EXIT_OK }
}
