//! `lab`: the emulated board lab for humans. `lab up` starts boards in the background and writes
//! a ready cluster.kdl, `lab down` stops them, `lab demo` runs the README's demo end to end.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use rvlab::clusterfile::ClusterFile;
use rvlab::{Lab, LabError, Role};

#[derive(Parser)]
#[command(
    name = "lab",
    about = "Emulated openEuler riscv64 boards, registries and k3s on this machine (needs root)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Clone)]
struct UpArgs {
    /// Number of k3s boards: the first is the server, the others agents.
    #[arg(long, default_value_t = 3)]
    boards: usize,
    /// Do not start the registry host board ("mac").
    #[arg(long)]
    no_registry_host: bool,
    /// Do not start the upstream registry playing docker.io.
    #[arg(long)]
    no_upstream: bool,
    /// The k3s binary for the boards (default: the simulated `k3s` next to this program).
    #[arg(long)]
    k3s: Option<PathBuf>,
    /// k3s version written into cluster.kdl.
    #[arg(long, default_value = "v1.33.4+k3s1")]
    k3s_version: String,
    /// State directory (cluster.kdl, key paths, pid).
    #[arg(long, env = "RVLAB_STATE", default_value = "/tmp/rvlab-state")]
    state: PathBuf,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a lab in the background, print its boards, write STATE/cluster.kdl; stays up until `lab down`.
    Up(UpArgs),
    /// Stop the lab started by `lab up`.
    Down {
        #[arg(long, env = "RVLAB_STATE", default_value = "/tmp/rvlab-state")]
        state: PathBuf,
    },
    /// Start a lab (server1, agent1, agent2, registry host mac, upstream), show it, run rvcluster
    /// plan and apply when rvcluster is available, tear down.
    Demo {
        /// The rvcluster binary (default: `rvcluster` next to this program, then on PATH).
        #[arg(long)]
        rvcluster: Option<PathBuf>,
        #[arg(long)]
        k3s: Option<PathBuf>,
    },
    #[command(hide = true)]
    Serve(UpArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Up(a) => up(&a),
        Cmd::Down { state } => down(&state),
        Cmd::Demo { rvcluster, k3s } => demo(rvcluster, k3s),
        Cmd::Serve(a) => serve(&a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lab: {e}");
            ExitCode::from(2)
        }
    }
}

/// Every missing prerequisite with its fix, or Ok.
fn check_prerequisites(need_registry: bool) -> Result<(), LabError> {
    let missing = rvlab::lab::preflight(need_registry);
    if missing.is_empty() {
        return Ok(());
    }
    let text: Vec<String> = missing.iter().map(|e| format!("  - {e}")).collect();
    Err(LabError::Missing {
        what: format!("this machine cannot run the lab yet:\n{}", text.join("\n")),
        fix: "see above".into(),
    })
}

fn sha256_of(p: &Path) -> Result<String, LabError> {
    let out = Command::new("sha256sum")
        .arg(p)
        .output()
        .map_err(|e| LabError::Io {
            context: "sha256sum".into(),
            source: e,
        })?;
    let s = String::from_utf8_lossy(&out.stdout);
    s.split_whitespace()
        .next()
        .filter(|h| h.len() == 64)
        .map(str::to_string)
        .ok_or_else(|| LabError::Invalid(format!("cannot hash {}", p.display())))
}

fn builder(a: &UpArgs) -> rvlab::LabBuilder {
    let mut b = Lab::builder();
    for i in 0..a.boards.max(1) {
        b = if i == 0 {
            b.board("server1", Role::Server)
        } else {
            b.board(format!("agent{i}"), Role::Agent)
        };
    }
    if !a.no_registry_host {
        b = b.registry_host("mac");
    }
    b.upstream(!a.no_upstream).seed_upstream(!a.no_upstream)
}

fn cluster_file(k3s: Option<&Path>, version: &str) -> Result<ClusterFile, LabError> {
    let found = match k3s {
        Some(p) => Some(p.to_path_buf()),
        None => rvlab::k3s_sim_binary().ok(),
    };
    let bin = match found {
        Some(p) => Some((
            std::fs::canonicalize(&p).unwrap_or(p.clone()),
            sha256_of(&p)?,
        )),
        None => None,
    };
    Ok(ClusterFile {
        name: "lab".into(),
        k3s_version: version.into(),
        k3s_binary: bin,
        ..Default::default()
    })
}

fn summary(lab: &Lab) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "{:<10} {:<9} {:<18} host key\n",
        "board", "role", "address"
    ));
    for b in lab.boards() {
        s.push_str(&format!(
            "{:<10} {:<9} {:<18} {}\n",
            b.name(),
            b.role().as_str(),
            b.address(),
            b.host_public_key()
        ));
    }
    if let Some(u) = lab.upstream() {
        s.push_str(&format!(
            "{:<10} {:<9} {:<18} (plain HTTP, plays docker.io)\n",
            "upstream",
            "registry",
            u.host_port()
        ));
    }
    s.push_str(&format!(
        "ssh key:     {}\nknown_hosts: {}\n",
        lab.client_key().display(),
        lab.known_hosts().display()
    ));
    if let Some(b) = lab.boards().first() {
        s.push_str(&format!(
            "try:         ssh -i {} -o UserKnownHostsFile={} -o StrictHostKeyChecking=yes root@{} uname -m\n",
            lab.client_key().display(),
            lab.known_hosts().display(),
            b.address()
        ));
    }
    s
}

fn up(a: &UpArgs) -> Result<(), LabError> {
    check_prerequisites(!a.no_upstream || !a.no_registry_host)?;
    let io = |c: &str| {
        let c = c.to_string();
        move |e| LabError::Io {
            context: c,
            source: e,
        }
    };
    if let Ok(pid) = std::fs::read_to_string(a.state.join("pid"))
        && rvlab::ns::is_running(pid.trim().parse().unwrap_or(0))
    {
        return Err(LabError::Invalid(format!(
            "a lab is already up (pid {}); run `lab down` first",
            pid.trim()
        )));
    }
    std::fs::create_dir_all(&a.state).map_err(io("creating state dir"))?;
    let _ = std::fs::remove_file(a.state.join("ready"));
    let log = std::fs::File::create(a.state.join("lab.log")).map_err(io("creating lab.log"))?;
    let exe = std::env::current_exe().map_err(io("current_exe"))?;
    let mut cmd = Command::new(exe);
    cmd.arg("serve")
        .arg("--boards")
        .arg(a.boards.to_string())
        .arg("--state")
        .arg(&a.state);
    cmd.arg("--k3s-version").arg(&a.k3s_version);
    if a.no_registry_host {
        cmd.arg("--no-registry-host");
    }
    if a.no_upstream {
        cmd.arg("--no-upstream");
    }
    if let Some(k) = &a.k3s {
        cmd.arg("--k3s").arg(k);
    }
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(io("log"))?)
        .stderr(log)
        .spawn()
        .map_err(io("starting lab serve"))?;
    loop {
        if a.state.join("ready").exists() {
            print!(
                "{}",
                std::fs::read_to_string(a.state.join("summary.txt")).unwrap_or_default()
            );
            println!("cluster:     {}", a.state.join("cluster.kdl").display());
            println!("stop with:   lab down --state {}", a.state.display());
            return Ok(());
        }
        if let Ok(Some(st)) = child.try_wait() {
            let log = std::fs::read_to_string(a.state.join("lab.log")).unwrap_or_default();
            return Err(LabError::NotReady {
                what: "lab".into(),
                detail: format!("{st}\n{log}"),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn serve(a: &UpArgs) -> Result<(), LabError> {
    // Block the stop signals before any thread exists, then wait for one of them.
    // SAFETY: plain signal-set manipulation on locals.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    let io = |c: &str| {
        let c = c.to_string();
        move |e| LabError::Io {
            context: c,
            source: e,
        }
    };
    let lab = builder(a).keep(false).start()?;
    let kdl = lab.cluster_kdl(&cluster_file(a.k3s.as_deref(), &a.k3s_version)?);
    std::fs::write(a.state.join("cluster.kdl"), kdl).map_err(io("writing cluster.kdl"))?;
    std::fs::write(a.state.join("summary.txt"), summary(&lab)).map_err(io("writing summary"))?;
    std::fs::write(a.state.join("lab-dir"), lab.dir().display().to_string())
        .map_err(io("writing lab-dir"))?;
    std::fs::write(a.state.join("pid"), std::process::id().to_string())
        .map_err(io("writing pid"))?;
    std::fs::write(a.state.join("ready"), "").map_err(io("writing ready"))?;
    let mut sig = 0;
    // SAFETY: waits on the set built above.
    unsafe { libc::sigwait(&set, &mut sig) };
    let _ = std::fs::remove_file(a.state.join("ready"));
    drop(lab);
    let _ = std::fs::remove_file(a.state.join("pid"));
    Ok(())
}

fn down(state: &Path) -> Result<(), LabError> {
    let pid: i32 = std::fs::read_to_string(state.join("pid"))
        .ok()
        .and_then(|p| p.trim().parse().ok())
        .ok_or_else(|| LabError::NoLab(state.to_path_buf()))?;
    if !rvlab::ns::is_running(pid as u32) {
        let _ = std::fs::remove_file(state.join("pid"));
        return Err(LabError::NoLab(state.to_path_buf()));
    }
    // SAFETY: kill(2) on the pid our `lab up` recorded.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(120);
    while rvlab::ns::is_running(pid as u32) {
        if Instant::now() > deadline {
            return Err(LabError::NotReady {
                what: "lab shutdown".into(),
                detail: format!("pid {pid} still running"),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("lab down");
    Ok(())
}

/// The images the demo cluster ports by hand (as the blog posts did) for k3s v1.33.4+k3s1 with
/// traefik, metrics-server and servicelb disabled; busybox has linux/riscv64 upstream.
const DEMO_PORTS: &[&str] = &[
    "rancher/mirrored-pause:3.6",
    "rancher/mirrored-coredns-coredns:1.12.3",
    "rancher/local-path-provisioner:v0.0.31",
];

/// The blog's cluster on the lab: registry host "mac" with Debian's docker-registry, a docker.io
/// mirror rewriting rancher/* to riscv64/*, the hand ports as `image` lines.
fn demo_cluster_file(k3s: Option<&Path>, version: &str) -> Result<ClusterFile, LabError> {
    let mut cf = cluster_file(k3s, version)?;
    cf.name = "demo".into();
    cf.disable = vec![
        "traefik".into(),
        "metrics-server".into(),
        "servicelb".into(),
    ];
    let reg = Path::new(rvlab::registry::DOCKER_REGISTRY);
    cf.registry_binary = Some((reg.to_path_buf(), sha256_of(reg)?));
    cf.images = DEMO_PORTS
        .iter()
        .map(|r| {
            let name = r.trim_start_matches("rancher/");
            (
                format!("docker.io/{r}"),
                format!("docker://docker.io/riscv64/{name}"),
            )
        })
        .collect();
    Ok(cf)
}

fn demo(rvcluster: Option<PathBuf>, k3s: Option<PathBuf>) -> Result<(), LabError> {
    check_prerequisites(true)?;
    let args = UpArgs {
        boards: 3,
        no_registry_host: false,
        no_upstream: false,
        k3s: k3s.clone(),
        k3s_version: "v1.33.4+k3s1".into(),
        state: PathBuf::new(),
    };
    println!(
        "== starting lab: server1, agent1, agent2, registry host mac, upstream playing docker.io"
    );
    let t = Instant::now();
    let lab = builder(&args).start()?;
    println!("   up in {:.1}s", t.elapsed().as_secs_f64());
    print!("{}", summary(&lab));
    println!("== what the boards say over ssh");
    for b in lab.boards() {
        let out = lab.ssh(
            b.name(),
            "echo $(hostname) $(uname -m) $(. /etc/os-release; echo $ID $VERSION_ID)",
        )?;
        print!("   {}", String::from_utf8_lossy(&out.stdout));
    }
    let ports: Vec<String> = DEMO_PORTS
        .iter()
        .map(|r| format!("riscv64/{}", r.trim_start_matches("rancher/")))
        .collect();
    let port_refs: Vec<&str> = ports.iter().map(String::as_str).collect();
    lab.push_riscv64_ports(&port_refs)?;
    println!(
        "== hand-ported riscv64 images on docker.io: {}",
        ports.join(", ")
    );
    let kdl_path = lab.dir().join("cluster.kdl");
    let kdl = lab.cluster_kdl(&demo_cluster_file(k3s.as_deref(), &args.k3s_version)?);
    std::fs::write(&kdl_path, &kdl).map_err(|e| LabError::Io {
        context: "writing cluster.kdl".into(),
        source: e,
    })?;
    println!("== cluster.kdl ({})\n{kdl}", kdl_path.display());
    let rv = rvcluster
        .or_else(|| rvlab::rvcluster_binary().ok())
        .or_else(|| which("rvcluster"));
    let mut result = Ok(());
    match rv {
        Some(rv) => {
            for verb in ["plan", "apply"] {
                println!("== rvcluster {verb} {}", kdl_path.display());
                let st = Command::new(&rv)
                    .arg(verb)
                    .arg(&kdl_path)
                    .current_dir(lab.dir())
                    .status()
                    .map_err(|e| LabError::Io {
                        context: format!("running {}", rv.display()),
                        source: e,
                    })?;
                if !st.success() {
                    result = Err(LabError::Command {
                        command: format!("rvcluster {verb}"),
                        status: st.to_string(),
                        stderr: String::new(),
                    });
                    break;
                }
            }
            if result.is_ok() {
                println!("== pods");
                let out = lab.ssh("server1", "k3s kubectl get pods -A -o wide")?;
                print!("{}", String::from_utf8_lossy(&out.stdout));
            }
        }
        None => {
            result = Err(LabError::Missing {
                what: "rvcluster not found".into(),
                fix: "cargo build --bin rvcluster".into(),
            });
        }
    }
    println!("== tearing down");
    drop(lab);
    println!("   done");
    result
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}
