//! Remote round trips per host, counted on the boards themselves: every command a client runs
//! over SSH is recorded by the board's sshd (lab ForceCommand, tests/lab/support/ssh-exec.sh).
//! A no-op plan and a no-op apply cost ONE remote command per host (lock+facts, the held
//! command); an apply that changes one config key costs at most 3 (here: the same one command,
//! the script travelling on its stdin). Deterministic counts, no timing. The health gate
//! (a restarted node must come back, polled over a NEW connection until it does) is left out
//! with --no-rollback, and so are the upgrade order's drains and waits (--no-drain): their polls
//! depend on how fast k3s starts; each poll costs one command on the server, two for an agent
//! (src/converge/confirm.rs). A first apply also asks each node which k3s it runs (the version
//! rules, docs/upgrades.md §2), as there is no cluster.lock yet.

use std::path::Path;
use std::process::Output;

use rvlab::{Lab, Role};

#[path = "support/e2e.rs"]
mod e2e;

fn write_cluster(lab: &Lab, dir: &Path, extra_config: &str) {
    e2e::write_lab_cluster(lab, dir, "rt", extra_config);
}

/// Runs rvcluster and returns, per board, the remote commands it ran.
fn counted(lab: &Lab, dir: &Path, args: &[&str]) -> (Output, Vec<(String, Vec<String>)>) {
    let before: Vec<usize> = lab.boards().iter().map(|b| b.remote_commands().len()).collect();
    let out = e2e::rv(dir, args);
    let per = lab
        .boards()
        .iter()
        .zip(before)
        .map(|(b, n)| (b.name().to_string(), b.remote_commands()[n..].to_vec()))
        .collect();
    (out, per)
}

fn assert_each(per: &[(String, Vec<String>)], what: &str, ok: impl Fn(usize) -> bool) {
    for (board, cmds) in per {
        assert!(ok(cmds.len()), "{what}: {board} ran {} remote command(s):\n{}", cmds.len(), cmds.join("\n"));
    }
}

#[test]
fn noop_plan_and_apply_are_one_remote_command_per_host_and_a_changed_key_at_most_three() {
    let lab = e2e::server_and_agents(2);
    let dir = tempfile::tempdir().unwrap();
    write_cluster(&lab, dir.path(), "");
    let (out, first) = counted(&lab, dir.path(), &["apply", "cluster.kdl", "--no-wait", "--skip-closure-check", "--no-rollback", "--no-drain"]);
    assert_eq!(out.status.code(), Some(0));
    // A first apply: the version question, then lock+facts; the k3s upload and the script ride
    // on the latter (requests on its stdin).
    assert_each(&first, "first apply", |n| n <= 2);

    let (out, plan) = counted(&lab, dir.path(), &["plan", "cluster.kdl", "--skip-closure-check", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "no changes pending");
    assert_each(&plan, "no-op plan", |n| n == 1);

    let (out, apply) = counted(&lab, dir.path(), &["apply", "cluster.kdl", "--no-wait", "--skip-closure-check", "--no-rollback", "--no-drain"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).matches("no changes").count() == 3, "a no-op");
    assert_each(&apply, "no-op apply", |n| n == 1);

    // One config key changed (cluster-wide, so every node's config.yaml): at most 3 per host.
    write_cluster(&lab, dir.path(), "        node-label \"zone=lab\"\n");
    let starts: Vec<usize> = lab.boards().iter().map(|b| b.service_starts(if b.role() == Role::Server { "k3s" } else { "k3s-agent" }).len()).collect();
    let (out, changed) = counted(&lab, dir.path(), &["apply", "cluster.kdl", "--no-wait", "--skip-closure-check", "--no-rollback", "--no-drain"]);
    assert_eq!(out.status.code(), Some(0));
    assert_each(&changed, "one changed key", |n| (1..=3).contains(&n));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches("~ restart k3s").count(), 3, "one restart per host: {text}");
    for (b, n) in lab.boards().iter().zip(starts) {
        let unit = if b.role() == Role::Server { "k3s" } else { "k3s-agent" };
        // `restart --no-block` returns before the restart is recorded: wait for it to land.
        for _ in 0..300 {
            if b.service_starts(unit).len() > n {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert_eq!(b.service_starts(unit).len(), n + 1, "{} restarted exactly once", b.name());
        let cfg = std::fs::read_to_string(b.path("/etc/rancher/k3s/config.yaml")).unwrap();
        assert!(cfg.contains("zone=lab"), "{cfg}");
    }
    // Which command each was: the held lock+facts command, never a separate lock or cat.
    for (board, cmds) in plan.iter().chain(&apply).chain(&changed) {
        for c in cmds {
            assert!(c.contains("export LC_ALL=C"), "{board}: unexpected command {c}");
        }
    }
}

/// Secrets never reach an output channel: with the most verbose logging (-vv, and as JSON lines)
/// and --json reports, the k3s token the agents received appears on no stdout or stderr of plan
/// and apply, while the env file holding it on the boards is mode 0600.
#[test]
fn the_token_appears_in_no_output_even_at_vv_and_json_logs_are_json() {
    let lab = e2e::server_and_agents(1);
    let dir = tempfile::tempdir().unwrap();
    write_cluster(&lab, dir.path(), "");
    let mut outputs = Vec::new();
    let mut run = |args: &[&str]| {
        let mut all = vec!["-vv"];
        all.extend_from_slice(args);
        let out = e2e::rv(dir.path(), &all);
        outputs.push(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)));
        out
    };
    assert_eq!(run(&["apply", "cluster.kdl", "--no-wait", "--skip-closure-check", "--no-rollback", "--no-drain"]).status.code(), Some(0));
    write_cluster(&lab, dir.path(), "        node-label \"zone=x\"\n");
    assert_eq!(run(&["plan", "cluster.kdl", "--skip-closure-check", "--json"]).status.code(), Some(0));
    assert_eq!(run(&["apply", "cluster.kdl", "--no-wait", "--skip-closure-check", "--json"]).status.code(), Some(0));
    let json_log = run(&["--log-format", "json", "plan", "cluster.kdl", "--skip-closure-check"]);
    let token = std::fs::read_to_string(lab.b("server1").path("/var/lib/rancher/k3s/server/token")).unwrap();
    let token = token.trim();
    assert!(token.len() > 20, "a real token: {token:?}");
    let env = lab.b("agent1").path("/etc/systemd/system/k3s-agent.service.env");
    assert!(std::fs::read_to_string(&env).unwrap().contains(token), "the agent got the token");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&env).unwrap().mode() & 0o777, 0o600);
    // The secret part of a K10 token is after `::server:`; neither it nor the whole token shows.
    let secret = token.rsplit(':').next().unwrap();
    for (i, o) in outputs.iter().enumerate() {
        assert!(!o.contains(token) && !o.contains(secret), "output {i} holds the token:\n{o}");
    }
    // -vv logged the remote commands (proof the most verbose level was on), as JSON lines when asked.
    assert!(outputs[0].contains("remote command"), "{}", outputs[0]);
    let stderr = String::from_utf8_lossy(&json_log.stderr).into_owned();
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with('{')).collect();
    assert!(!lines.is_empty(), "json log lines");
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(v.get("level").is_some() && v.get("fields").is_some(), "{l}");
    }
}

/// A non-root login with `sudo -n` (as on a board whose root login is closed): the held
/// lock+facts command and the apply script on its stdin run through sudo, the cluster converges,
/// and a no-op plan is still one remote command per host.
#[test]
fn a_sudo_login_converges_in_one_command_per_host() {
    let lab = Lab::builder()
        .board("server1", Role::Server)
        .board("agent1", Role::Agent)
        .sudo_user("euler")
        .ready_delay_ms(200)
        .start()
        .expect("lab starts (needs root, sshd, sudo)");
    let dir = tempfile::tempdir().unwrap();
    write_cluster(&lab, dir.path(), "");
    let kdl = std::fs::read_to_string(dir.path().join("cluster.kdl")).unwrap();
    std::fs::write(dir.path().join("cluster.kdl"), kdl.replace("user=\"root\"", "user=\"euler\"")).unwrap();
    let (out, _) = counted(&lab, dir.path(), &["apply", "cluster.kdl", "--no-wait", "--skip-closure-check", "--no-rollback", "--no-drain"]);
    assert_eq!(out.status.code(), Some(0));
    for b in lab.boards() {
        let bin = b.path("/usr/local/bin/k3s");
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&bin).unwrap().uid(), 0, "{}: written as root through sudo", b.name());
    }
    let (out, plan) = counted(&lab, dir.path(), &["plan", "cluster.kdl", "--skip-closure-check", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "nothing pending");
    assert_each(&plan, "no-op plan through sudo", |n| n == 1);
    for (board, cmds) in &plan {
        assert!(cmds.iter().all(|c| c.contains(" euler ")), "{board}: ran as euler: {cmds:?}");
    }
}
