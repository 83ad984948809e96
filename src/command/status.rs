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
    /// managed, external or none.
    registry_mode: &'static str,
    /// Per node: the air-gap tarballs present and whether k3s imported each (tarball images only).
    tarballs: std::collections::BTreeMap<String, verify::airgap::NodeTarballs>,
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
    // Each node's tarballs, read from the node itself (what is there, not what cluster.kdl says).
    let mut tarballs = std::collections::BTreeMap::new();
    if cluster.tarball_images().next().is_some() {
        for n in cluster.nodes.iter().filter(|n| filter.matches(n)) {
            let r = ctx.connect(n).map_err(|e| e.to_string()).and_then(|mut h| {
                let k3s = converge::k3s_on(&ctx, n, &mut h).map_err(|e| e.to_string())?;
                verify::airgap::probe(&mut h, &k3s).map_err(|e| e.to_string())
            });
            tarballs.insert(n.name.clone(), r.unwrap_or_else(verify::airgap::NodeTarballs::unreadable));
        }
    }
    let drift = if a.no_drift {
        None
    } else {
        let mut ctx = ctx;
        ctx.registry_password = converge::registry_password(&cluster).ok().flatten();
        // Drift compares with the tarballs a plan would deliver (from the local cache, or built).
        ctx.tarballs = match crate::images::tarballs(&cluster, &std::collections::BTreeMap::new()) {
            Ok(t) => t.into_iter().map(|(t, _)| t).collect(),
            Err(e) => {
                out.error(&format!("image tarballs: {e}"));
                return EXIT_FAILED;
            }
        };
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
    let s = Status { nodes, pods: lines, drift, ready, registry_mode: cluster.registry_mode().as_str(), tarballs };
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
    if !s.tarballs.is_empty() {
        println!("{}", out.bold(&format!("image tarballs ({})", crate::render::airgap::IMAGES_DIR)));
        for (node, t) in &s.tarballs {
            match &t.error {
                Some(e) => println!("  {node:<24} cannot read: {e}"),
                None => {
                    if t.tarballs.is_empty() {
                        println!("  {node:<24} none");
                    }
                    for f in &t.tarballs {
                        let state = match (f.imported, &t.ctr_error) {
                            (Some(true), _) => "imported".to_string(),
                            (Some(false), _) => "NOT imported".to_string(),
                            (None, Some(e)) => format!("unknown (k3s ctr: {e})"),
                            (None, None) => "unknown (not an rvcluster tarball)".to_string(),
                        };
                        println!("  {node:<24} {:<56} {:<48} {state}", f.file, f.image.clone().unwrap_or_else(|| "?".into()));
                    }
                }
            }
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
