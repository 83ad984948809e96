//! `rvcluster plan` and `rvcluster apply`: one code path, each step run dry (plan) or wet (apply).

use clap::Args;

use super::{EXIT_FAILED, Global, Target, load_cluster};
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
}

#[derive(Args, Debug)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub target: Target,
    /// Accept and record host keys never seen before (a changed key is still refused).
    #[arg(long)]
    pub accept_new: bool,
    /// Refuse to run when resolution would change cluster.lock.
    #[arg(long)]
    pub locked: bool,
    /// How many hosts to work on at once.
    #[arg(long, default_value_t = 8)]
    pub parallel: usize,
}

pub fn run_plan(global: &Global, a: &PlanArgs, out: &Output) -> i32 {
    if let Err(code) = load_cluster(global, &a.target, out) {
        return code;
    }
    out.error("plan: gathering host facts is not wired up yet in this build; `rvcluster check` validates the file");
    EXIT_FAILED
}

pub fn run_apply(global: &Global, a: &ApplyArgs, out: &Output) -> i32 {
    if let Err(code) = load_cluster(global, &a.target, out) {
        return code;
    }
    out.error("apply: converging hosts is not wired up yet in this build; `rvcluster check` validates the file");
    EXIT_FAILED
}
