//! The command line: one clap Args struct per subcommand, each in its own file, and the exit codes.
//! Owns argument parsing and turning results into output and exit status; the work itself lives in
//! the concept modules (spec, profile, transport, registry...).

use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use crate::output::{ColorChoice, Output};
use crate::profile::Profiles;
use crate::spec::filter::NodeFilter;
use crate::spec::{Cluster, SpecError};

pub mod check;
pub mod duration;
pub mod generations;
pub mod image;
pub mod plan;
pub mod reset;
pub mod status;
pub mod kubeconfig;
pub mod trust;

/// Exit status: everything went as asked.
pub const EXIT_OK: i32 = 0;
/// Exit status: a host or a step failed.
pub const EXIT_FAILED: i32 = 1;
/// Exit status: the input (cluster.kdl, profiles, flags) was rejected; nothing was touched.
pub const EXIT_INVALID: i32 = 2;
/// Exit status of `plan --detailed-exitcode` when changes are pending.
pub const EXIT_CHANGES: i32 = 3;

#[derive(Parser, Debug)]
#[command(
    name = "rvcluster",
    version,
    about = "Declarative k3s clusters on RISC-V boards, over plain SSH",
    long_about = "rvcluster reads one cluster.kdl describing k3s nodes, a private registry, ported images and \
                  disabled addons, shows what would change on every host (plan) and converges the hosts over SSH \
                  (apply).\n\nExit status: 0 ok, 1 a host or step failed, 2 input rejected (nothing touched), \
                  3 changes pending (plan --detailed-exitcode).",
    after_help = "Exit status: 0 ok, 1 a host or step failed, 2 input rejected, 3 changes pending (plan --detailed-exitcode)."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// More detail (repeat for more).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors and the final result.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Colour in output (NO_COLOR in the environment means never).
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto, global = true)]
    pub color: ColorChoice,
    /// Ask once for the sudo password of non-root logins (instead of requiring `sudo -n`).
    #[arg(long, global = true)]
    pub ask_become_pass: bool,
    /// Extra profile directories (OS families, k3s releases) added to the built-in ones.
    #[arg(long = "profiles", value_name = "DIR", global = true, env = "RVCLUSTER_PROFILES", value_delimiter = ':')]
    pub profiles: Vec<PathBuf>,
    /// Log format for -v/-vv and RUST_LOG output (json: one object per line, for CI logs).
    #[arg(long, value_enum, default_value_t = crate::output::log::LogFormat::Text, global = true)]
    pub log_format: crate::output::log::LogFormat,
    /// The password read by --ask-become-pass (memory only; never printed).
    #[arg(skip)]
    pub become_password: Option<String>,
}

impl Global {
    /// The converge context for a command: plan (`wet` false) or apply.
    pub fn ctx<'a>(&self, cluster: &'a Cluster, profiles: &'a Profiles, wet: bool) -> crate::converge::Ctx<'a> {
        let mut ctx = crate::converge::Ctx::new(cluster, profiles, wet);
        ctx.become_password = self.become_password.clone();
        ctx
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Validate cluster.kdl and print a summary: nodes by role, images, disabled addons, the k3s release.
    Check(check::CheckArgs),
    /// Show what apply would change on every host, without changing anything.
    Plan(plan::PlanArgs),
    /// Converge every host to cluster.kdl.
    Apply(plan::ApplyArgs),
    /// Nodes, pods and drift, read from the cluster (changes nothing).
    Status(status::StatusArgs),
    /// The cluster's kubeconfig, with the server address and names fixed; --merge into ~/.kube/config.
    Kubeconfig(kubeconfig::KubeconfigArgs),
    /// Record a node's SSH host key (after checking its fingerprint); --replace for a re-flashed board.
    Trust(trust::TrustArgs),
    /// Each host's generations: what every apply made of it, which one is current, store size.
    Generations(generations::GenerationsArgs),
    /// Unified diff between two generations of one node (`--on NODE A [B]`); secrets hidden.
    Diff(generations::DiffArgs),
    /// Go back to an earlier generation (default: the previous one), server first; recorded as a new generation.
    Rollback(generations::RollbackArgs),
    /// Delete generations beyond `generations keep=` (and store entries none of them needs).
    Gc(generations::GcArgs),
    /// Uninstall k3s (and the managed registry) from the selected hosts, agents first; the files
    /// they had before rvcluster come back.
    Reset(reset::ResetArgs),
    /// Build the images cluster.kdl declares with a `build` block (reproducible OCI archives).
    Image(image::ImageArgs),
    /// Print shell completions.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    Man,
}

/// The cluster file and node filter most subcommands take.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// The cluster description.
    #[arg(value_name = "FILE", default_value = "cluster.kdl")]
    pub file: PathBuf,
    /// Act only on these nodes: names, globs and @tags, comma-separated (e.g. `server,board*,@rack1`).
    #[arg(long, value_name = "NAME,GLOB,@TAG")]
    pub on: Option<String>,
}

/// Output format for commands whose output is data.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Text,
    Json,
}

pub fn main() -> i32 {
    let mut cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => EXIT_OK,
                _ => EXIT_INVALID,
            };
        }
    };
    let out = Output::new(&cli.global);
    crate::output::log::init(cli.global.verbose, cli.global.log_format, out.color);
    if cli.global.ask_become_pass {
        eprint!("BECOME password: ");
        // Without a terminal (CI, a pipe) the password is the first line of stdin, as `sudo -S`
        // takes it; console would return an empty line there.
        let read = if console::Term::stderr().is_term() {
            console::Term::stderr().read_secure_line()
        } else {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).map(|_| line.trim_end_matches(['\n', '\r']).to_string())
        };
        match read {
            Ok(pw) => cli.global.become_password = Some(pw),
            Err(e) => {
                out.error(&format!("cannot read the password: {e}"));
                return EXIT_INVALID;
            }
        }
    }
    run(cli, &out)
}

fn run(cli: Cli, out: &Output) -> i32 {
    match cli.command {
        Command::Check(a) => check::run(&cli.global, &a, out),
        Command::Plan(a) => plan::run_plan(&cli.global, &a, out),
        Command::Apply(a) => plan::run_apply(&cli.global, &a, out),
        Command::Status(a) => status::run(&cli.global, &a, out),
        Command::Kubeconfig(a) => kubeconfig::run(&cli.global, &a, out),
        Command::Trust(a) => trust::run(&cli.global, &a, out),
        Command::Image(a) => image::run(&cli.global, &a, out),
        Command::Generations(a) => generations::run_generations(&cli.global, &a, out),
        Command::Diff(a) => generations::run_diff(&cli.global, &a, out),
        Command::Rollback(a) => generations::run_rollback(&cli.global, &a, out),
        Command::Gc(a) => generations::run_gc(&cli.global, &a, out),
        Command::Reset(a) => reset::run(&cli.global, &a, out),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "rvcluster", &mut std::io::stdout());
            EXIT_OK
        }
        Command::Man => match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
            Ok(()) => EXIT_OK,
            Err(e) => {
                out.error(&format!("cannot write the man page: {e}"));
                EXIT_FAILED
            }
        },
    }
}

/// Loads profiles and the cluster file, reporting every problem; Err is the exit status.
pub fn load_cluster(global: &Global, target: &Target, out: &Output) -> Result<(Profiles, Cluster, NodeFilter), i32> {
    let profiles = match Profiles::load(&global.profiles) {
        Ok(p) => p,
        Err(errors) => {
            for e in errors {
                out.diagnostic(e);
            }
            return Err(EXIT_INVALID);
        }
    };
    let cluster = crate::spec::load(&target.file, &profiles).map_err(|e: SpecError| {
        out.diagnostic(e);
        EXIT_INVALID
    })?;
    let filter = match &target.on {
        None => NodeFilter::all(),
        Some(s) => match NodeFilter::parse(s) {
            Ok(f) => f,
            Err(e) => {
                out.error(&format!("--on: {e}"));
                return Err(EXIT_INVALID);
            }
        },
    };
    let registry = cluster.registry.as_ref().map(|r| r.name.as_str());
    let unmatched: Vec<&str> = filter
        .unmatched(&cluster.nodes)
        .into_iter()
        .filter(|i| !registry.is_some_and(|r| NodeFilter::parse(i).is_ok_and(|f| f.matches_name(r))))
        .collect();
    if !unmatched.is_empty() {
        let mut names: Vec<&str> = cluster.nodes.iter().map(|n| n.name.as_str()).collect();
        names.extend(registry);
        out.error(&format!(
            "--on: {} matched no node in {} (nodes: {})",
            unmatched.join(", "),
            target.file.display(),
            names.join(", ")
        ));
        return Err(EXIT_INVALID);
    }
    Ok((profiles, cluster, filter))
}
