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
            out.push_str(&format!("{name} application/vnd.oci.image.index.v1+json {digest} {} linux/riscv64 io.cri-containerd.image=managed\n", p.size));
        }
    }
    out
}

pub fn main() -> i32 {
    let argv: Vec<String> = std::env::args().collect();
    let prog = argv.first().map(|a| a.rsplit('/').next().unwrap_or(a).to_string()).unwrap_or_default();
    let paths = Paths::from_env();
    let rest: Vec<String> = argv.iter().skip(1).cloned().collect();
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
        "crictl" => {
            if args.first().map(String::as_str) == Some("images") {
                print!("{}", images_listing(&paths, true));
                0
            } else {
                eprintln!("crictl: only `crictl images` is simulated by rvlab");
                1
            }
        }
        "ctr" => {
            if args.iter().any(|a| a == "images" || a == "image" || a == "i") && args.iter().any(|a| a == "ls" || a == "list") {
                print!("{}", images_listing(&paths, false));
                0
            } else {
                eprintln!("ctr: only `ctr -n k8s.io images ls` is simulated by rvlab");
                1
            }
        }
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
