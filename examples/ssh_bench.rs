//! Driver for bench/ssh_*.sh (not part of the product).
//!   ssh_bench facts  KNOWN_HOSTS KEY IP:PORT...        facts from every host in parallel
//!   ssh_bench lab-facts BOARDS RUNS  start a lab of emulated boards (rvlab) and time facts from
//!       all of them against as many parallel `ssh -o BatchMode=yes board true`, interleaved
//!   ssh_bench upload KNOWN_HOSTS KEY IP:PORT LOCAL DEST [SHA256]
//!       upload one file (with SHA256: as a pinned artifact, no local hashing pass)
use std::path::PathBuf;
use std::process::ExitCode;

use rvcluster::transport::{
    AuthConfig, FactsQuery, Host, HostKeyPolicy, RemoteFile, SshHost, Summary, Target, run_parallel,
};

fn target(i: usize, hp: &str, key: &str) -> Target {
    let (h, p) = hp.rsplit_once(':').expect("IP:PORT");
    let mut t = Target::new(format!("h{i}"), h);
    t.port = p.parse().expect("port");
    t.identity_files = vec![PathBuf::from(key)];
    t
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Facts on lab boards vs OpenSSH's floor, each run as fresh processes, interleaved.
fn lab_facts(boards: usize, runs: usize) -> ExitCode {
    let mut b = rvlab::Lab::builder().board("server1", rvlab::Role::Server);
    for i in 1..boards {
        b = b.board(format!("agent{i}"), rvlab::Role::Agent);
    }
    let lab = match b.start() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("lab: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (kh, key) = (
        lab.known_hosts().display().to_string(),
        lab.client_key().display().to_string(),
    );
    let hosts: Vec<String> = lab
        .boards()
        .iter()
        .map(|b| format!("{}:{}", b.address(), b.ssh_port()))
        .collect();
    let me = std::env::current_exe().expect("own path");
    let ours = || {
        let st = std::process::Command::new(&me)
            .args(["facts", &kh, &key])
            .args(&hosts)
            .status();
        assert!(
            st.map(|s| s.success()).unwrap_or(false),
            "rvcluster facts failed"
        );
    };
    let peer = || {
        let children: Vec<_> = lab
            .boards()
            .iter()
            .map(|b| {
                std::process::Command::new("ssh")
                    .args([
                        "-F",
                        "/dev/null",
                        "-o",
                        "BatchMode=yes",
                        "-o",
                        "StrictHostKeyChecking=yes",
                    ])
                    .arg("-o")
                    .arg(format!("UserKnownHostsFile={kh}"))
                    .args([
                        "-o",
                        "IdentitiesOnly=yes",
                        "-i",
                        &key,
                        "-p",
                        &b.ssh_port().to_string(),
                    ])
                    .arg(format!("root@{}", b.address()))
                    .arg("true")
                    .spawn()
                    .expect("ssh")
            })
            .collect();
        for mut c in children {
            assert!(c.wait().map(|s| s.success()).unwrap_or(false), "ssh failed");
        }
    };
    let (mut t_ours, mut t_peer) = (vec![], vec![]);
    for i in 0..runs + 3 {
        let t = std::time::Instant::now();
        ours();
        let a = t.elapsed().as_secs_f64();
        let t = std::time::Instant::now();
        peer();
        let p = t.elapsed().as_secs_f64();
        if i >= 3 {
            t_ours.push(a);
            t_peer.push(p);
        }
    }
    let (mo, mp) = (median(t_ours), median(t_peer));
    println!(
        "rvcluster-{boards}x-facts (lab boards): median {:.1} ms",
        mo * 1000.0
    );
    println!(
        "openssh-{boards}x-true (lab boards): median {:.1} ms",
        mp * 1000.0
    );
    println!(
        "ratio rvcluster-{boards}x-facts/openssh-{boards}x-true = {:.2}x (medians, {runs} runs)",
        mo / mp
    );
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("lab-facts") {
        return lab_facts(
            args[1].parse().expect("BOARDS"),
            args[2].parse().expect("RUNS"),
        );
    }
    let (mode, kh, key) = (&args[0], &args[1], &args[2]);
    let policy = HostKeyPolicy {
        project_known_hosts: Some(kh.into()),
        user_known_hosts: None,
        accept_new: false,
    };
    let auth = AuthConfig {
        home: None,
        agent_socket: None,
        passphrase: None,
        prompt: false,
        ..AuthConfig::default()
    };
    match mode.as_str() {
        "facts" => {
            let targets: Vec<Target> = args[3..]
                .iter()
                .enumerate()
                .map(|(i, hp)| target(i, hp, key))
                .collect();
            let q = FactsQuery {
                paths: vec![
                    "/usr/local/bin/k3s".into(),
                    "/etc/rancher/k3s/config.yaml".into(),
                    "/etc/os-release".into(),
                ],
                services: vec!["k3s.service".into()],
                ..Default::default()
            };
            let out = run_parallel(&targets, targets.len(), None, |t, _| {
                SshHost::connect_with(t, &policy, &auth)?.facts(&q)
            });
            let s = Summary::of(&out);
            if !s.all_ok() {
                eprintln!("{s}");
                return ExitCode::FAILURE;
            }
        }
        "upload" => {
            let t = target(0, &args[3], key);
            let mut h = match SshHost::connect_with(&t, &policy, &auth) {
                Ok(h) => h,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            let (local, dest) = (
                std::path::Path::new(&args[4]),
                RemoteFile::new(args[5].clone(), 0o755),
            );
            let r = match args.get(6) {
                Some(sha) => h.upload_pinned(local, sha, &dest),
                None => h.upload(local, &dest),
            };
            if let Err(e) = r {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        }
        // Diagnosis: raw stream throughput of the exec channel (`cat > /dev/null`).
        "stream" => {
            let t = target(0, &args[3], key);
            let mut h = SshHost::connect_with(&t, &policy, &auth).expect("connect");
            let mut f = std::fs::File::open(&args[4]).expect("open");
            let start = std::time::Instant::now();
            let out = h.exec_raw(&args[5], &mut f, None).expect("exec");
            eprintln!(
                "{:?} status {} {}",
                start.elapsed(),
                out.status,
                out.stderr_str()
            );
        }
        m => {
            eprintln!("unknown mode {m}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
