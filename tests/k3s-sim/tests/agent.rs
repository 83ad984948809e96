//! `k3s agent` end to end: https-only K3S_URL, token with CA pinning, its own registries.yaml
//! for its own pods, and the node-password rule for a re-flashed board.
mod common;
use common::*;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(120);

#[test]
fn http_k3s_url_is_refused_with_a_clear_error() {
    let up = Registry::start();
    let mut agent = SimNode::new("agent-http", &up);
    agent.start_agent(&[("K3S_URL", "http://127.0.0.1:6443"), ("K3S_TOKEN", "x")]);
    assert_eq!(agent.wait_exit(), 1);
    let log = agent.log();
    assert!(log.contains("level=fatal") && log.contains("must use https://"), "{log}");
    let mut agent2 = SimNode::new("agent-notoken", &up);
    agent2.start_agent(&[("K3S_URL", "https://127.0.0.1:6443")]);
    assert_eq!(agent2.wait_exit(), 1);
    assert!(agent2.log().contains("--token is required"), "{}", agent2.log());
}

#[test]
fn agent_joins_pulls_with_its_own_registries_and_a_reflashed_board_needs_node_and_secret_deleted() {
    let up = Registry::start();
    let mirror = Registry::start();
    k3s_sim::upstream::seed(&up.url()).unwrap();
    port_to_riscv(&mirror, &["rancher/mirrored-pause:3.6"], "");
    let mut srv = SimNode::new("srv-join", &up);
    srv.write("/etc/rancher/k3s/config.yaml", "disable:\n  - traefik\n  - metrics-server\n  - local-storage\n  - coredns\n");
    srv.write(
        "/var/lib/rancher/k3s/server/manifests/echo.yaml",
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: echo\n  namespace: default\nspec:\n  selector:\n    matchLabels:\n      app: echo\n  template:\n    metadata:\n      labels:\n        app: echo\n    spec:\n      containers:\n      - name: echo\n        image: riscv64/busybox:latest\n",
    );
    srv.start_server(&[]);
    let token = srv.token();
    let mut agent = SimNode::new("agent1", &up);
    // only the agent knows the mirror holding a riscv64 pause
    agent.write("/etc/rancher/k3s/registries.yaml", &format!("mirrors:\n  docker.io:\n    endpoint: [\"http://{}\"]\n", mirror.authority()));
    agent.write("/etc/systemd/system/k3s-agent.service.env", "");
    let url = srv.url();
    agent.start_agent(&[("K3S_URL", &url), ("K3S_TOKEN", &token)]);
    let pods = wait_until("echo Ready on agent1 and stuck on the server", WAIT, || {
        let p = srv.pods();
        let on = |n: &str| p.iter().find(|x| x["spec"]["nodeName"] == n).cloned();
        match (on("agent1"), on("srv-join")) {
            (Some(a), Some(s)) if is_ready(&a) && waiting_reason(&s).as_deref() == Some("ContainerCreating") => Some(p),
            _ => None,
        }
    });
    assert_eq!(pods.len(), 2);
    let (_, nodes, _) = srv.kubectl(&["get", "nodes"]);
    assert!(nodes.lines().any(|l| l.starts_with("agent1 ") && l.contains(" Ready ") && l.contains("<none>")), "{nodes}");
    let (code, secret, _) = srv.kubectl(&["-n", "kube-system", "get", "secret", "agent1.node-password.k3s"]);
    assert_eq!(code, 0, "{secret}");
    let pw1 = agent.read("/etc/rancher/node/password");
    assert!(!pw1.trim().is_empty());

    // re-flash: the board comes back with a new password and the same hostname
    agent.stop();
    std::fs::remove_dir_all(agent.path("/etc/rancher/node")).unwrap();
    let log_before = agent.log().len();
    agent.start_agent(&[("K3S_URL", &url), ("K3S_TOKEN", &token)]);
    wait_until("the rejection to be logged", WAIT, || agent.log()[log_before..].contains("Node password rejected, duplicate hostname").then_some(()));
    assert_ne!(agent.read("/etc/rancher/node/password"), pw1);
    // deleting the node alone is not enough
    let (code, out, err) = srv.kubectl(&["delete", "node", "agent1"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "node \"agent1\" deleted\n");
    let n_rejections = |s: &SimNode| s.log()[log_before..].matches("Node password rejected").count();
    let seen = n_rejections(&agent);
    wait_until("another rejection after deleting only the node", WAIT, || (n_rejections(&agent) > seen).then_some(()));
    assert!(!agent.log()[log_before..].contains("joined"));
    let (code, out, _) = srv.kubectl(&["-n", "kube-system", "delete", "secret", "agent1.node-password.k3s"]);
    assert_eq!(code, 0);
    assert_eq!(out, "secret \"agent1.node-password.k3s\" deleted\n");
    wait_until("agent1 back and Ready", WAIT, || {
        let p = srv.pods();
        p.iter().any(|x| x["spec"]["nodeName"] == "agent1" && is_ready(x)).then_some(())
    });
    assert!(agent.log()[log_before..].contains("Node agent1 joined"));
    let (code, _, err) = srv.kubectl(&["delete", "node", "nope"]);
    assert_eq!((code, err.as_str()), (1, "Error from server (NotFound): nodes \"nope\" not found\n"));
    // what rvcluster runs when forgetting a re-flashed board
    let (code, out, err) = srv.kubectl(&["delete", "node", "nope", "--ignore-not-found"]);
    assert_eq!((code, out.as_str(), err.as_str()), (0, "", ""));
    let (code, out, _) = srv.kubectl(&["get", "node", "agent1", "-o", "name"]);
    assert_eq!((code, out.as_str()), (0, "node/agent1\n"));
    let (code, out, _) = srv.kubectl(&["-n", "kube-system", "get", "secret", "agent1.node-password.k3s", "-o", "name"]);
    assert_eq!((code, out.as_str()), (0, "secret/agent1.node-password.k3s\n"));
}

#[test]
fn wrong_token_is_refused_and_a_bare_token_works() {
    let up = Registry::start();
    let mut srv = SimNode::new("srv-token", &up);
    srv.write("/etc/rancher/k3s/config.yaml", "token: lab-secret\ndisable: [traefik, metrics-server, local-storage, coredns]\n");
    srv.start_server(&[]);
    assert!(srv.token().ends_with("::server:lab-secret"));
    let url = srv.url();
    let mut bad = SimNode::new("agent-bad", &up);
    bad.start_agent(&[("K3S_URL", &url), ("K3S_TOKEN", "wrong")]);
    wait_until("401 logged", WAIT, || bad.log().contains("401").then_some(()));
    let mut pinned_wrong = SimNode::new("agent-pin", &up);
    pinned_wrong.start_agent(&[("K3S_URL", &url), ("K3S_TOKEN", "K10deadbeef::server:lab-secret")]);
    wait_until("CA hash mismatch logged", WAIT, || pinned_wrong.log().contains("token CA hash does not match").then_some(()));
    let mut good = SimNode::new("agent-good", &up);
    good.write("/tmp/token", "lab-secret\n");
    good.start_agent(&[("K3S_URL", &url), ("K3S_TOKEN_FILE", "/tmp/token")]);
    wait_until("agent-good registered", WAIT, || {
        let (_, out, _) = srv.kubectl(&["get", "nodes", "-o", "wide"]);
        out.lines().any(|l| l.starts_with("agent-good ") && l.contains(&good.ip)).then_some(())
    });
    let (_, out, _) = srv.kubectl(&["get", "nodes"]);
    assert!(!out.contains("agent-bad") && !out.contains("agent-pin"), "{out}");
    // an agent that stops posting status turns NotReady after the grace period (5 s in tests)
    good.stop();
    let node = wait_until("agent-good NotReady", WAIT, || {
        let (_, out, _) = srv.kubectl(&["get", "nodes"]);
        out.lines().find(|l| l.starts_with("agent-good ") && l.contains("NotReady")).map(str::to_string)
    });
    assert!(node.contains("<none>"), "{node}");
    let nodes = srv.json(&["get", "nodes", "agent-good"]);
    let ready = nodes["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap().clone();
    assert_eq!((ready["status"].as_str(), ready["reason"].as_str()), (Some("Unknown"), Some("NodeStatusUnknown")));
}
