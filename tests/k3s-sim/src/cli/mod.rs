//! Entry point of the `k3s` binary: argv[0] dispatch (kubectl, crictl, ctr symlinks, as real
//! k3s does) and subcommands --version, server, agent, kubectl, crictl, ctr.
//! Owns argument dispatch only.
use crate::paths::Paths;
use crate::simconf::SimConf;

fn images_listing(paths: &Paths, crictl: bool) -> String {
    let store: std::collections::BTreeMap<String, crate::pull::Pulled> =
        std::fs::read(paths.image_store()).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    let mut out = if crictl { "IMAGE                                     TAG                 IMAGE ID            SIZE\n".to_string() } else { "REF TYPE DIGEST SIZE PLATFORMS LABELS\n".to_string() };
    for (name, p) in store {
        let (repo, tag) = name.rsplit_once(':').unwrap_or((&name, "latest"));
        let digest = p.image_id.rsplit('@').next().unwrap_or("").to_string();
        if crictl {
            out.push_str(&format!("{repo:<41} {tag:<19} {:<19} {}B\n", digest.trim_start_matches("sha256:").chars().take(13).collect::<String>(), p.size));
        } else {
            // As containerd's `ctr images ls`: SIZE is human-readable, "%.1f <unit>" (it holds a space).
            out.push_str(&format!("{name} application/vnd.oci.image.index.v1+json {digest} {} linux/riscv64 io.cri-containerd.image=managed\n", human_size(p.size)));
        }
    }
    out
}

/// containerd's progress.Bytes formatting: one decimal and a binary unit, e.g. `291.6 KiB`.
fn human_size(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let (mut f, mut i) = (n as f64, 0);
    while f >= 1024.0 && i < units.len() - 1 {
        f /= 1024.0;
        i += 1;
    }
    format!("{f:.1} {}", units[i])
}

fn crictl(args: &[String], paths: &Paths) -> i32 {
    match args.first().map(String::as_str) {
        Some("images") | Some("img") => {
            print!("{}", images_listing(paths, true));
            0
        }
        Some("pull") => {
            let Some(img) = args.iter().skip(1).find(|a| !a.starts_with('-')) else {
                eprintln!("FATA[0000] image name cannot be empty");
                return 1;
            };
            let r = match crate::image::ImageRef::parse(img) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("FATA[0000] pulling image: {e}");
                    return 1;
                }
            };
            // what the running containerd was configured with at k3s' start
            let puller = match crate::pull::Puller::from_runtime(paths) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("FATA[0000] {e}");
                    return 1;
                }
            };
            match puller.pull(&r) {
                Ok(p) => {
                    let id = p.image_id.rsplit('@').next().unwrap_or("").to_string();
                    if let Err(e) = crate::kubelet::add_to_store(paths, vec![p]) {
                        eprintln!("FATA[0000] pulling image: {e}");
                        return 1;
                    }
                    println!("Image is up to date for {id}");
                    0
                }
                Err(e) => {
                    eprintln!("FATA[0000] pulling image: {}", e.rpc());
                    1
                }
            }
        }
        _ => {
            eprintln!("crictl: the rvlab simulator implements `crictl images` and `crictl pull IMAGE`");
            1
        }
    }
}

fn ctr(args: &[String], paths: &Paths) -> i32 {
    let mut rest: Vec<&str> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "-n" | "--namespace" | "-a" | "--address" => i += 1,
            a if a.starts_with("--namespace=") || a.starts_with("--address=") => {}
            a => rest.push(a),
        }
        i += 1;
    }
    let (Some(obj), Some(verb)) = (rest.first(), rest.get(1)) else {
        eprintln!("ctr: the rvlab simulator implements `ctr -n k8s.io images ls|pull|tag`");
        return 1;
    };
    if !matches!(*obj, "images" | "image" | "i") {
        eprintln!("ctr: the rvlab simulator implements `ctr -n k8s.io images ls|pull|tag`");
        return 1;
    }
    let operands: Vec<&str> = rest[2..].iter().copied().filter(|a| !a.starts_with('-')).collect();
    match *verb {
        "ls" | "list" => {
            print!("{}", images_listing(paths, false));
            0
        }
        "tag" => {
            let [src, dst] = operands.as_slice() else {
                eprintln!("ctr: usage: ctr images tag SOURCE TARGET");
                return 1;
            };
            let store = crate::kubelet::load_store(paths);
            let (Ok(s), Ok(d)) = (crate::image::ImageRef::parse(src), crate::image::ImageRef::parse(dst)) else {
                eprintln!("ctr: invalid reference");
                return 1;
            };
            let Some(p) = store.get(&s.to_string()).cloned() else {
                eprintln!("ctr: image \"{s}\": not found");
                return 1;
            };
            let mut q = p;
            q.image = d.to_string();
            q.image_id = format!("{}@{}", d.name(), q.image_id.rsplit('@').next().unwrap_or(""));
            if let Err(e) = crate::kubelet::add_to_store(paths, vec![q]) {
                eprintln!("ctr: {e}");
                return 1;
            }
            println!("{d}");
            0
        }
        "pull" => {
            // ctr talks to containerd directly: registries.yaml (CRI hosts config) does not apply
            let Some(img) = operands.first().and_then(|i| crate::image::ImageRef::parse(i).ok()) else {
                eprintln!("ctr: usage: ctr images pull REF");
                return 1;
            };
            let mut puller = match crate::pull::Puller::from_runtime(paths) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("ctr: {e}");
                    return 1;
                }
            };
            puller.registries = Default::default();
            match puller.pull(&img) {
                Ok(p) => {
                    let _ = crate::kubelet::add_to_store(paths, vec![p]);
                    println!("{img}: done");
                    0
                }
                Err(e) => {
                    eprintln!("ctr: {}", e.message);
                    1
                }
            }
        }
        v => {
            eprintln!("ctr: images {v} is not simulated by rvlab (ls, pull, tag)");
            1
        }
    }
}

pub fn main() -> i32 {
    let argv: Vec<String> = std::env::args().collect();
    let prog = argv.first().map(|a| a.rsplit('/').next().unwrap_or(a).to_string()).unwrap_or_default();
    let paths = Paths::from_env();
    let rest: Vec<String> = argv.iter().skip(1).cloned().collect();
    if prog.starts_with("containerd-shim") {
        return crate::leftovers::shim_main();
    }
    let (cmd, args) = match prog.as_str() {
        "kubectl" | "crictl" | "ctr" => (prog.clone(), rest),
        _ => (rest.first().cloned().unwrap_or_default(), rest.iter().skip(1).cloned().collect()),
    };
    match cmd.as_str() {
        "--version" | "-v" | "version" => {
            let v = crate::release::effective_version(&SimConf::load(&paths));
            print!("{}", crate::release::version_text(&v));
            0
        }
        "server" => crate::server::run(&args),
        "agent" => crate::agent::run(&args),
        "kubectl" => {
            let out = crate::kubectl::run(&args, &paths);
            print!("{}", out.stdout);
            eprint!("{}", out.stderr);
            out.code
        }
        "crictl" => crictl(&args, &paths),
        "ctr" => ctr(&args, &paths),
        "" | "help" | "--help" | "-h" => {
            println!("NAME:\n   k3s - Kubernetes, but small and simple (rvlab simulator)\n\nCOMMANDS:\n   server   Run management server\n   agent    Run node agent\n   kubectl  Run kubectl\n   crictl   Run crictl\n   ctr      Run ctr");
            0
        }
        other => {
            eprintln!("Incorrect Usage: command \"{other}\" not found (the rvlab simulator implements server, agent, kubectl, crictl, ctr, --version)");
            1
        }
    }
}
