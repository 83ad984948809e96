//! `rvcluster status FILE`: nodes (role, k3s version, readiness), pods by namespace, and whether a
//! plan would be empty (drift), read over SSH without changing anything.

use clap::Args;
use serde::Serialize;

use super::{EXIT_FAILED, EXIT_OK, Global, Target, load_cluster};
use crate::converge;
use crate::output::Output;
use crate::verify;

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: Target,
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
    /// Skip the drift check (no plan is computed).
    #[arg(long)]
    pub no_drift: bool,
}

#[derive(Serialize)]
struct Status {
    nodes: Vec<verify::kube::NodeStatus>,
    pods: Vec<PodLine>,
    drift: Option<Vec<String>>,
    ready: bool,
}

#[derive(Serialize)]
struct PodLine {
    namespace: String,
    name: String,
    node: Option<String>,
    phase: String,
    ready: bool,
    problem: Option<String>,
}

pub fn run(global: &Global, a: &StatusArgs, out: &Output) -> i32 {
    let (profiles, cluster, filter) = match load_cluster(global, &a.target, out) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let Some(server) = cluster.servers().next() else { return EXIT_FAILED };
    let ctx = global.ctx(&cluster, &profiles, false);
    let mut host = match ctx.connect(server) {
        Ok(h) => h,
        Err(e) => {
            out.error(&e.to_string());
            return EXIT_FAILED;
        }
    };
    let k3s = match converge::k3s_on(&ctx, server, &mut host) {
        Ok(k) => k,
        Err(e) => {
            out.error(&format!("server {}: {e}", server.name));
            return EXIT_FAILED;
        }
    };
    let (nodes, pods, events) = match verify::poll(&mut verify::Server { host: &mut host, k3s }) {
        Ok(x) => x,
        Err(e) => {
            out.error(&format!("server {}: {e}", server.name));
            return EXIT_FAILED;
        }
    };
    let h = verify::health(&nodes, &pods, &events);
    let lines: Vec<PodLine> = pods
        .iter()
        .map(|p| PodLine {
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            node: p.node.clone(),
            phase: p.phase.clone(),
            ready: p.ok(),
            problem: h.problems.iter().find(|x| x.pod == p.id()).map(|x| x.cause.summary()),
        })
        .collect();
    let drift = if a.no_drift {
        None
    } else {
        let mut ctx = ctx;
        ctx.registry_password = converge::registry_password(&cluster).ok().flatten();
        let plans = converge::run_nodes(&ctx, &|n| filter.matches(n));
        Some(
            plans
                .iter()
                .flat_map(|p| {
                    let e = p.error.iter().map(move |e| format!("{}: cannot plan: {e}", p.node));
                    e.chain(p.changes.iter().map(move |c| format!("{}: {}", p.node, c.describe().lines().next().unwrap_or(""))))
                })
                .collect::<Vec<_>>(),
        )
    };
    let ready = h.all_ready() && h.nodes_total >= cluster.nodes.len();
    let s = Status { nodes, pods: lines, drift, ready };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&s).expect("status serializes"));
        return EXIT_OK;
    }
    println!("{}", out.bold(&format!("nodes ({}/{} Ready)", h.nodes_ready, h.nodes_total)));
    for n in &s.nodes {
        let role = cluster.node(&n.name).map(|x| x.role.as_str()).unwrap_or("?");
        println!(
            "  {:<24} {:<7} {:<16} {}",
            n.name,
            role,
            n.kubelet_version,
            if n.ready { "Ready".to_string() } else { format!("NotReady ({})", n.reason.clone().unwrap_or_default()) }
        );
    }
    let mut ns: Vec<&str> = s.pods.iter().map(|p| p.namespace.as_str()).collect();
    ns.sort();
    ns.dedup();
    println!("{}", out.bold(&format!("pods ({}/{} Ready)", h.pods_ok, h.pods_total)));
    for n in ns {
        println!("  {n}");
        for p in s.pods.iter().filter(|p| p.namespace == n) {
            let state = if p.ready { p.phase.clone() } else { p.problem.clone().unwrap_or_else(|| p.phase.clone()) };
            println!("    {:<48} {:<20} {state}", p.name, p.node.clone().unwrap_or_default());
        }
    }
    match &s.drift {
        None => {}
        Some(d) if d.is_empty() => println!("{} none: a plan would change nothing", out.bold("drift")),
        Some(d) => {
            println!("{} {} pending change(s):", out.bold("drift"), d.len());
            for l in d {
                println!("  {l}");
            }
        }
    }
    EXIT_OK
}
