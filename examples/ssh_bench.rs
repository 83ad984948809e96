//! Driver for bench/ssh_*.sh (not part of the product).
//!   ssh_bench facts  KNOWN_HOSTS KEY IP:PORT...        facts from every host in parallel
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

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
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
