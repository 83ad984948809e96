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

/// The blog's redis workload and its custom local-storage manifest (local-path-provisioner and
/// busybox from the ported riscv64 images), written beside cluster.kdl.
const REDIS_YAML: &str = include_str!("../../../../fixtures/blog-lab/manifests/redis.yaml");
const LOCAL_STORAGE_YAML: &str =
    include_str!("../../../../fixtures/blog-lab/manifests/custom-local-storage.yaml");

/// The blog's first attempt ported only these by hand (pushed to the upstream as riscv64-only
/// images, then named by `image` lines): (reference pods ask for, riscv64 port on docker.io).
const FIRST_PORTS: &[(&str, &str)] = &[
    (
        "docker.io/rancher/mirrored-pause:3.6",
        "riscv64/mirrored-pause:3.6",
    ),
    ("riscv64/redis:1.1", "riscv64/redis:1.1"),
];

/// What the blog's final cluster ports besides [`FIRST_PORTS`], for k3s v1.33.4+k3s1 with
/// coredns and local-storage disabled (the custom manifest runs local-path-provisioner).
const FINAL_PORTS: &[(&str, &str)] = &[
    (
        "docker.io/rancher/klipper-helm:v0.9.8-build20250709",
        "riscv64/klipper-helm:v0.9.8-build20250709",
    ),
    (
        "docker.io/rancher/mirrored-library-traefik:3.3.6",
        "riscv64/mirrored-library-traefik:3.3.6",
    ),
    (
        "docker.io/rancher/mirrored-metrics-server:v0.8.0",
        "riscv64/mirrored-metrics-server:v0.8.0",
    ),
    (
        "docker.io/rancher/klipper-lb:v0.4.13",
        "riscv64/klipper-lb:v0.4.13",
    ),
    (
        "docker.io/rancher/local-path-provisioner:v0.0.31",
        "riscv64/local-path-provisioner:v0.0.31",
    ),
    ("riscv64/busybox:1", "riscv64/busybox:1"),
];

/// The images the first attempt's closure check must report MISSING.
const FIRST_MISSING: &[&str] = &[
    "klipper-helm",
    "mirrored-metrics-server",
    "mirrored-coredns-coredns",
    "local-path-provisioner:v0.0.31",
];

/// The pods the first attempt's apply must diagnose as image pull failures.
const FIRST_FAILING_PODS: &[&str] = &[
    "helm-install-traefik-",
    "helm-install-traefik-crd-",
    "local-path-provisioner-",
    "metrics-server-",
    "coredns-",
];

fn image_lines(ports: &[&[(&str, &str)]]) -> Vec<(String, String)> {
    ports
        .iter()
        .flat_map(|p| p.iter())
        .map(|(r, port)| (r.to_string(), format!("docker://docker.io/{port}")))
        .collect()
}

/// The blog's first attempt: registry host with only pause and redis ported, no mirror rewrite,
/// nothing disabled.
fn first_attempt(base: &ClusterFile) -> ClusterFile {
    ClusterFile {
        rewrites: vec![],
        disable: vec![],
        manifests: vec!["manifests/redis.yaml".into()],
        images: image_lines(&[FIRST_PORTS]),
        ..base.clone()
    }
}

/// The blog's final cluster: docker.io mirror rewriting rancher/* to riscv64/*, coredns and
/// local-storage disabled with the custom local-storage manifest, every image ported.
fn final_cluster(base: &ClusterFile) -> ClusterFile {
    ClusterFile {
        rewrites: vec![("^rancher/(.*)".into(), "riscv64/$1".into())],
        disable: vec!["local-storage".into(), "coredns".into()],
        manifests: vec![
            "manifests/redis.yaml".into(),
            "manifests/custom-local-storage.yaml".into(),
        ],
        images: image_lines(&[FIRST_PORTS, FINAL_PORTS]),
        ..base.clone()
    }
}

/// What one rvcluster run printed.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Copies `r` to our stdout (or stderr) line by line as it arrives and returns all of it.
fn tee(r: impl std::io::Read, to_stderr: bool) -> String {
    use std::io::{BufRead, Write};
    let mut r = std::io::BufReader::new(r);
    let mut all = Vec::new();
    let mut line = Vec::new();
    while let Ok(n) = r.read_until(b'\n', &mut line) {
        if n == 0 {
            break;
        }
        if to_stderr {
            let mut e = std::io::stderr().lock();
            let _ = e.write_all(&line);
            let _ = e.flush();
        } else {
            let mut o = std::io::stdout().lock();
            let _ = o.write_all(&line);
            let _ = o.flush();
        }
        all.append(&mut line);
    }
    String::from_utf8_lossy(&all).into_owned()
}

/// The demo's steps: rvcluster runs in the cluster directory (HOME pointed there, no ssh-agent),
/// each with the exit status it must end with.
struct Story<'a> {
    rv: &'a Path,
    dir: &'a Path,
}

impl Story<'_> {
    fn run(&self, args: &[&str], want: i32) -> Result<Ran, LabError> {
        println!("$ rvcluster {}", args.join(" "));
        let t = Instant::now();
        let mut child = Command::new(self.rv)
            .args(["--color", "never"])
            .args(args)
            .current_dir(self.dir)
            .env("HOME", self.dir)
            .env_remove("SSH_AUTH_SOCK")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| LabError::Io {
                context: format!("running {}", self.rv.display()),
                source: e,
            })?;
        let out = child.stdout.take().expect("piped stdout");
        let err = child.stderr.take().expect("piped stderr");
        let out = std::thread::spawn(move || tee(out, false));
        let err = std::thread::spawn(move || tee(err, true));
        let st = child.wait().map_err(|e| LabError::Io {
            context: "waiting for rvcluster".into(),
            source: e,
        })?;
        let ran = Ran {
            code: st.code(),
            stdout: out.join().unwrap_or_default(),
            stderr: err.join().unwrap_or_default(),
        };
        println!(
            "   -> exit {} in {:.1}s (expected {want})",
            st.code().map_or("by signal".to_string(), |c| c.to_string()),
            t.elapsed().as_secs_f64()
        );
        if ran.code != Some(want) {
            return Err(step_failed(
                args,
                format!("ended with {st}, expected exit status {want}"),
            ));
        }
        Ok(ran)
    }
}

fn step_failed(args: &[&str], why: String) -> LabError {
    LabError::Command {
        command: format!("rvcluster {}", args.join(" ")),
        status: "not as the demo expects".into(),
        stderr: why,
    }
}

/// Ok when `ok`, else the demo's error naming the command and what it lacked.
fn expect(ok: bool, args: &[&str], what: impl Into<String>) -> Result<(), LabError> {
    if ok {
        Ok(())
    } else {
        Err(step_failed(args, what.into()))
    }
}

fn write(p: &Path, text: &str) -> Result<(), LabError> {
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).map_err(|e| LabError::Io {
            context: format!("creating {}", d.display()),
            source: e,
        })?;
    }
    std::fs::write(p, text).map_err(|e| LabError::Io {
        context: format!("writing {}", p.display()),
        source: e,
    })
}

fn push_ports(lab: &Lab, ports: &[(&str, &str)]) -> Result<(), LabError> {
    let refs: Vec<&str> = ports.iter().map(|(_, p)| *p).collect();
    lab.push_riscv64_ports(&refs)?;
    println!(
        "   hand-ported linux/riscv64 images pushed to docker.io: {}",
        refs.join(", ")
    );
    Ok(())
}

fn pods(lab: &Lab) -> Result<(), LabError> {
    println!("$ ssh server1 k3s kubectl get pods -A -o wide");
    let out = lab.ssh("server1", "k3s kubectl get pods -A -o wide")?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    Ok(())
}

fn demo(rvcluster: Option<PathBuf>, k3s: Option<PathBuf>) -> Result<(), LabError> {
    check_prerequisites(true)?;
    let rv = rvcluster
        .or_else(|| rvlab::rvcluster_binary().ok())
        .or_else(|| which("rvcluster"))
        .ok_or_else(|| LabError::Missing {
            what: "rvcluster not found".into(),
            fix: "cargo build --bin rvcluster".into(),
        })?;
    let args = UpArgs {
        boards: 3,
        no_registry_host: false,
        no_upstream: false,
        k3s: k3s.clone(),
        k3s_version: "v1.33.4+k3s1".into(),
        state: PathBuf::new(),
    };
    let t0 = Instant::now();
    println!(
        "== starting lab: server1, agent1, agent2, registry host mac, upstream playing docker.io"
    );
    let mut lab = builder(&args).start()?;
    println!("   up in {:.1}s", t0.elapsed().as_secs_f64());
    print!("{}", summary(&lab));
    let result = story(&mut lab, &rv, k3s.as_deref(), &args.k3s_version);
    println!("== tearing down");
    drop(lab);
    println!("   done");
    match &result {
        Ok(()) => println!(
            "== the whole story behaved as expected in {:.1}s",
            t0.elapsed().as_secs_f64()
        ),
        Err(_) => println!(
            "== the demo FAILED after {:.1}s (see the error below)",
            t0.elapsed().as_secs_f64()
        ),
    }
    result
}

fn story(lab: &mut Lab, rv: &Path, k3s: Option<&Path>, version: &str) -> Result<(), LabError> {
    println!("== what the boards say over ssh");
    for b in lab.boards() {
        let out = lab.ssh(
            b.name(),
            "echo $(hostname) $(uname -m) $(. /etc/os-release; echo $ID $VERSION_ID)",
        )?;
        print!("   {}", String::from_utf8_lossy(&out.stdout));
    }
    // The cluster directory: cluster.kdl, its manifests and the known_hosts `rvcluster trust`
    // maintains (host keys are not pinned in cluster.kdl, so a re-flashed board can be trusted).
    let dir = lab.dir().to_path_buf();
    let kdl_path = dir.join("cluster.kdl");
    write(&dir.join("manifests/redis.yaml"), REDIS_YAML)?;
    write(
        &dir.join("manifests/custom-local-storage.yaml"),
        LOCAL_STORAGE_YAML,
    )?;
    let known: String = lab
        .boards()
        .iter()
        .map(|b| b.known_hosts_line() + "\n")
        .collect();
    write(&dir.join("known_hosts"), &known)?;
    let mut base = cluster_file(k3s, version)?;
    base.name = "blog".into();
    base.pin_host_keys = false;
    let reg = Path::new(rvlab::registry::DOCKER_REGISTRY);
    base.registry_binary = Some((reg.to_path_buf(), sha256_of(reg)?));
    let s = Story { rv, dir: &dir };
    let mac = lab
        .boards()
        .iter()
        .find(|b| b.role() == Role::Registry)
        .map(|b| format!("{}:{}", b.address(), base.registry_port))
        .unwrap_or_default();

    println!(
        "\n== 1. the blog's first attempt: only pause and redis ported, no mirror rewrite, nothing disabled"
    );
    push_ports(lab, FIRST_PORTS)?;
    let kdl = lab.cluster_kdl(&first_attempt(&base));
    write(&kdl_path, &kdl)?;
    println!("== cluster.kdl ({})\n{kdl}", kdl_path.display());
    println!(
        "-- plan: the closure check names every image no registry can serve for linux/riscv64"
    );
    let a = ["plan", "cluster.kdl"];
    let r = s.run(&a, 1)?;
    for m in FIRST_MISSING {
        expect(
            r.stdout
                .lines()
                .any(|l| l.contains("MISSING") && l.contains(m)),
            &a,
            format!("no MISSING line for {m}"),
        )?;
    }
    println!("-- apply anyway: the pods the blog saw stuck, each with a diagnosis");
    let a = [
        "apply",
        "cluster.kdl",
        "--skip-closure-check",
        "--timeout",
        "300",
    ];
    let r = s.run(&a, 1)?;
    for pod in FIRST_FAILING_PODS {
        // kubectl alternates ErrImagePull and ImagePullBackOff for the same failure.
        expect(
            r.stderr.lines().any(|l| {
                l.starts_with("pod kube-system/")
                    && l.contains(pod)
                    && (l.contains("ImagePullBackOff") || l.contains("ErrImagePull"))
            }),
            &a,
            format!("no ImagePullBackOff/ErrImagePull diagnosis for {pod}"),
        )?;
    }
    expect(
        r.stderr.contains("no match for platform in manifest"),
        &a,
        "the diagnosis does not quote containerd's platform error",
    )?;
    expect(
        r.stderr.contains("fix: port it to linux/riscv64"),
        &a,
        "the diagnosis does not say how to fix it",
    )?;
    let tried = format!("tried {mac}/rancher/klipper-helm");
    expect(
        r.stderr.contains(&tried),
        &a,
        format!("the diagnosis does not say `{tried}`"),
    )?;
    expect(
        !r.stderr.contains("pod default/redis"),
        &a,
        "redis (ported) was diagnosed as failing",
    )?;

    println!(
        "\n== 2. the blog's final cluster: mirror rewrite rancher/* -> riscv64/*, coredns and local-storage disabled, every image ported"
    );
    push_ports(lab, FINAL_PORTS)?;
    let kdl = lab.cluster_kdl(&final_cluster(&base));
    write(&kdl_path, &kdl)?;
    println!("== cluster.kdl ({})\n{kdl}", kdl_path.display());
    s.run(&["plan", "cluster.kdl"], 0)?;
    let a = ["apply", "cluster.kdl", "--timeout", "300"];
    let r = s.run(&a, 0)?;
    expect(
        r.stderr.contains("every node and pod is Ready"),
        &a,
        "apply did not report every node and pod Ready",
    )?;
    let registries = lab.b("server1").path("/etc/rancher/k3s/registries.yaml");
    let registries = std::fs::read_to_string(&registries).unwrap_or_default();
    expect(
        registries.contains("\"^rancher/(.*)\": \"riscv64/$1\""),
        &a,
        format!("server1's registries.yaml has no rewrite:\n{registries}"),
    )?;
    pods(lab)?;

    println!("\n== 3. apply again: nothing changes");
    let r = s.run(&a, 0)?;
    let n = r.stdout.matches("no changes").count();
    expect(
        n == 4,
        &a,
        format!("{n} hosts said \"no changes\", expected 4 (mac and three nodes)"),
    )?;
    println!("-- and the plan is empty, images included");
    s.run(&["plan", "cluster.kdl", "--detailed-exitcode"], 0)?;

    println!("\n== 4. re-flash agent1: new host key, empty disk");
    lab.reflash("agent1")?;
    println!(
        "   agent1 re-flashed; its new host key: {}",
        lab.b("agent1").host_public_key()
    );
    println!("-- apply refuses the changed host key");
    let a = ["apply", "cluster.kdl", "--on", "agent1"];
    let r = s.run(&a, 1)?;
    expect(
        r.all().contains("HOST KEY HAS CHANGED"),
        &a,
        "apply did not refuse the changed host key",
    )?;
    println!("-- trust the new key on purpose");
    let a = ["trust", "agent1", "cluster.kdl", "--replace"];
    s.run(&a, 0)?;
    println!("-- apply: agent1 rejoins");
    let a = ["apply", "cluster.kdl", "--timeout", "300"];
    let r = s.run(&a, 0)?;
    expect(
        r.stderr.contains("every node and pod is Ready (3 nodes"),
        &a,
        "apply did not report every node and pod Ready with 3 nodes",
    )?;
    println!("$ ssh server1 k3s kubectl get nodes -o wide");
    let out = lab.ssh("server1", "k3s kubectl get nodes -o wide")?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    pods(lab)?;

    println!(
        "\n== 5. a bad change: a bind-address that is not on the board makes k3s exit; apply's health gate rolls server1 back by itself"
    );
    let good = std::fs::read_to_string(&kdl_path).unwrap_or_default();
    let bad = good.replacen(
        "k3s version=",
        "// the bad change\nk3s version=",
        1,
    );
    let bad = insert_after_k3s_open(&bad, "    config { bind-address \"10.99.99.99\" }\n");
    write(&kdl_path, &bad)?;
    println!("   cluster.kdl gains, inside k3s: config {{ bind-address \"10.99.99.99\" }}");
    let a = ["apply", "cluster.kdl", "--confirm-timeout", "20s", "--no-wait"];
    let r = s.run(&a, 1)?;
    expect(
        r.all().contains("rolled back to generation") && r.all().contains("server1"),
        &a,
        "apply did not say that server1 was rolled back",
    )?;
    println!("-- the generations server1 has now (the bad one, then the rollback)");
    s.run(&["generations", "cluster.kdl", "--on", "server1"], 0)?;
    println!("-- cluster.kdl fixed again; the cluster is still Ready");
    write(&kdl_path, &good)?;
    let a = ["apply", "cluster.kdl", "--timeout", "300"];
    let r = s.run(&a, 0)?;
    expect(
        r.stderr.contains("every node and pod is Ready (3 nodes"),
        &a,
        "the cluster is not Ready after the rollback",
    )?;
    Ok(())
}

/// `text` with `line` added right after the `k3s version=... {` line.
fn insert_after_k3s_open(text: &str, line: &str) -> String {
    let mut out = String::new();
    let mut done = false;
    for l in text.lines() {
        out.push_str(l);
        out.push('\n');
        if !done && l.starts_with("k3s version=") && l.trim_end().ends_with('{') {
            out.push_str(line);
            done = true;
        }
    }
    out
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}
