//! `rvcluster plan` and `rvcluster apply`: one code path (converge::run), each step dry or wet.

use clap::Args;

use super::{EXIT_CHANGES, EXIT_FAILED, EXIT_OK, Global, Target, load_cluster};
use crate::converge::{self, HostPlan, Options};
use crate::output::Output;

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
    /// How many hosts to work on at once.
    #[arg(long, default_value_t = 8)]
    pub parallel: usize,
}

#[derive(Args, Debug)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub target: Target,
    /// Record host keys never seen before (a changed key is still refused).
    #[arg(long)]
    pub accept_new: bool,
    /// How many hosts to work on at once.
    #[arg(long, default_value_t = 8)]
    pub parallel: usize,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

fn print(plans: &[HostPlan], json: bool, wet: bool, out: &Output) {
    if json {
        println!("{}", serde_json::to_string_pretty(plans).expect("plans serialize"));
        return;
    }
    for p in plans {
        let head = format!("{} {} ({}, {})", if wet { "applied" } else { "host" }, p.node, p.role, p.address);
        println!("{}", out.bold(&head));
        if let Some(e) = &p.error {
            println!("  {} {e}", console::style("failed:").red().bold());
        } else if p.changes.is_empty() {
            println!("  {}", out.dim("no changes"));
        }
        for c in &p.changes {
            println!("  {}", c.describe());
        }
    }
    let t = converge::totals(plans);
    out.info(&format!(
        "{} hosts, {} {}, {} failed",
        t["hosts"],
        t["changes"],
        if wet { "changes made" } else { "changes pending" },
        t["failed"]
    ));
}

pub fn run_plan(global: &Global, a: &PlanArgs, out: &Output) -> i32 {
    let (profiles, cluster, filter) = match load_cluster(global, &a.target, out) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let opts = Options { wet: false, accept_new: a.accept_new, parallel: a.parallel };
    let plans = converge::run_with(&cluster, &profiles, &|n| filter.matches(n), &|r| filter.matches_name(r), &opts);
    print(&plans, a.json, false, out);
    if plans.iter().any(|p| p.error.is_some()) {
        EXIT_FAILED
    } else if a.detailed_exitcode && plans.iter().any(|p| !p.changes.is_empty()) {
        EXIT_CHANGES
    } else {
        EXIT_OK
    }
}

pub fn run_apply(global: &Global, a: &ApplyArgs, out: &Output) -> i32 {
    let (profiles, cluster, filter) = match load_cluster(global, &a.target, out) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let opts = Options { wet: true, accept_new: a.accept_new, parallel: a.parallel };
    let plans = converge::run_with(&cluster, &profiles, &|n| filter.matches(n), &|r| filter.matches_name(r), &opts);
    print(&plans, a.json, true, out);
    if plans.iter().any(|p| p.error.is_some()) { EXIT_FAILED } else { EXIT_OK }
}
