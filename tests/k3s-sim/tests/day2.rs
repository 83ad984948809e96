//! Day-2 operations as kubectl and the Kubernetes docs describe them: cordon/uncordon, drain
//! (refusals before any eviction, DaemonSet pods stay, controllers recreate evicted pods on
//! other schedulable nodes or leave them Pending), /readyz, the audit log's order, the
//! kubeletVersion of the binary a node runs, and an agent newer than its server refused.
mod common;
use common::*;
use serde_json::Value;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(120);

/// sim.conf with amd64 (the seeded rancher/* images have it) so every pod can start.
fn node(name: &str, up: &Registry) -> SimNode {
    let n = SimNode::new(name, up);
    let conf = n.read("/etc/rvlab/sim.conf");
    n.write("/etc/rvlab/sim.conf", &format!("{conf}arch amd64\n"));
    n
}

const NO_ADDONS: &str = "disable: [traefik, metrics-server, local-storage, coredns, servicelb]\n";

fn workloads() -> String {
    let img = "rancher/mirrored-pause:3.6";
    let tmpl = |labels: &str, extra: &str| format!("  template:\n    metadata:\n      labels:\n        app: {labels}\n    spec:\n{extra}      containers:\n      - name: c\n        image: {img}\n");
    [
        format!("apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: ds\nspec:\n{}", tmpl("ds", "")),
        format!("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 7\n{}", tmpl("web", "")),
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: cache\nspec:\n  replicas: 1\n{}      volumes:\n      - name: scratch\n        emptyDir: {{}}\n",
            tmpl("cache", "      nodeSelector:\n        kubernetes.io/hostname: agent1\n")
        ),
        format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: lonely\nspec:\n  nodeName: agent1\n  containers:\n  - name: c\n    image: {img}\n"),
        format!("apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: once\nspec:\n{}", tmpl("once", "      nodeSelector:\n        kubernetes.io/hostname: agent1\n      restartPolicy: Never\n")),
    ]
    .join("---\n")
}

fn pods_on(srv: &SimNode, node: &str) -> Vec<Value> {
    srv.pods().into_iter().filter(|p| p["spec"]["nodeName"] == node).collect()
}

fn name(p: &Value) -> String {
    p["metadata"]["name"].as_str().unwrap_or("").to_string()
}

fn audit(srv: &SimNode) -> Vec<Value> {
    srv.read("/var/lib/rancher/k3s/server/logs/audit.log").lines().map(|l| serde_json::from_str(l).expect("one JSON object per line")).collect()
}

#[test]
fn cordon_drain_uncordon_as_kubectl_does_with_readyz_and_an_ordered_audit_log() {
    let up = Registry::start();
    k3s_sim::upstream::seed(&up.url()).unwrap();
    let mut srv = node("srv", &up);
    srv.write("/etc/rancher/k3s/config.yaml", NO_ADDONS);
    srv.start_server(&[]);
    let (code, out, _) = srv.kubectl(&["get", "--raw", "/readyz"]);
    assert_eq!((code, out.as_str()), (0, "ok"));
    let (_, out, _) = srv.kubectl(&["get", "--raw", "/livez?verbose"]);
    assert!(out.contains("[+]ping ok") && out.ends_with("livez check passed\n"), "{out}");
    assert_eq!(srv.kubectl(&["get", "--raw", "/healthz"]).1, "ok");
    let (token, url) = (srv.token(), srv.url());
    let mut agents = Vec::new();
    for n in ["agent1", "agent2"] {
        let mut a = node(n, &up);
        a.start_agent(&[("K3S_URL", &url), ("K3S_TOKEN", &token)]);
        agents.push(a);
    }
    wait_until("3 Ready nodes", WAIT, || {
        let (_, t, _) = srv.kubectl(&["get", "nodes"]);
        (t.lines().filter(|l| l.contains(" Ready ")).count() == 3).then_some(())
    });
    srv.write("/var/lib/rancher/k3s/server/manifests/apps.yaml", &workloads());
    wait_until("every pod Running or Completed, the job done", WAIT, || {
        let p = srv.pods();
        let settled = p.len() == 3 + 7 + 1 + 1 + 1 && p.iter().all(|x| is_ready(x) || x["status"]["phase"] == "Succeeded");
        settled.then_some(())
    });
    let on1: Vec<String> = pods_on(&srv, "agent1").iter().map(name).collect();
    assert!(on1.iter().any(|n| n.starts_with("web-")), "fewest-pods-first spreads web onto agent1: {on1:?}");
    assert!(on1.iter().any(|n| n.starts_with("once-")) && on1.contains(&"lonely".to_string()), "{on1:?}");
    for n in ["srv", "agent2"] {
        assert!(pods_on(&srv, n).iter().any(|p| name(p).starts_with("web-")), "web runs on {n} too");
    }

    // cordon
    assert_eq!(srv.kubectl(&["cordon", "agent1"]).1, "node/agent1 cordoned\n");
    assert_eq!(srv.kubectl(&["cordon", "agent1"]).1, "node/agent1 already cordoned\n");
    let (code, _, e) = srv.kubectl(&["cordon", "nosuch"]);
    assert_eq!((code, e.as_str()), (1, "Error from server (NotFound): nodes \"nosuch\" not found\n"));
    let (_, t, _) = srv.kubectl(&["get", "nodes"]);
    assert!(t.lines().any(|l| l.starts_with("agent1 ") && l.contains(" Ready,SchedulingDisabled ")), "{t}");
    let n = srv.json(&["get", "node", "agent1"]);
    assert_eq!(n["spec"]["unschedulable"], true);
    assert_eq!(n["spec"]["taints"][0]["key"], "node.kubernetes.io/unschedulable");
    assert_eq!(n["spec"]["taints"][0]["effect"], "NoSchedule");

    // refusals list the pods and evict nothing
    let before: Vec<String> = srv.pods().iter().map(|p| p["metadata"]["uid"].as_str().unwrap().to_string()).collect();
    let (code, out, err) = srv.kubectl(&["drain", "agent1"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(out, "node/agent1 already cordoned\n");
    let ds = pods_on(&srv, "agent1").iter().map(name).find(|n| n.starts_with("ds-")).unwrap();
    let cache = pods_on(&srv, "agent1").iter().map(name).find(|n| n.starts_with("cache-")).unwrap();
    assert!(err.starts_with("error: unable to drain node \"agent1\" due to error: [cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore): "), "{err}");
    assert!(err.contains(&format!("default/{ds}")) && err.contains(&format!("cannot delete Pods with local storage (use --delete-emptydir-data to override): default/{cache}")), "{err}");
    assert!(err.contains("cannot delete Pods declare no controller (use --force to override): default/lonely"), "{err}");
    assert!(err.contains("There are pending nodes to be drained:\n agent1\n"), "{err}");
    let (code, _, err) = srv.kubectl(&["drain", "agent1", "--ignore-daemonsets", "--delete-emptydir-data"]);
    assert_eq!(code, 1);
    assert!(err.ends_with("\ncannot delete Pods declare no controller (use --force to override): default/lonely\n"), "{err}");
    let after: Vec<String> = srv.pods().iter().map(|p| p["metadata"]["uid"].as_str().unwrap().to_string()).collect();
    assert_eq!(before, after, "a refused drain evicts nothing");

    // the drain
    let (code, out, err) = srv.kubectl(&["drain", "agent1", "--ignore-daemonsets", "--delete-emptydir-data", "--force", "--timeout=90s", "--grace-period=5"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.starts_with(&format!("Warning: ignoring DaemonSet-managed Pods: default/{ds}; deleting Pods with local storage: default/{cache}; deleting Pods that declare no controller: default/lonely")), "{err}");
    for n in on1.iter().filter(|n| !n.starts_with("ds-")) {
        assert!(out.contains(&format!("evicting pod default/{n}\n")) && out.contains(&format!("pod/{n} evicted\n")), "{n}: {out}");
    }
    assert!(out.ends_with("node/agent1 drained\n"), "{out}");
    let left: Vec<String> = pods_on(&srv, "agent1").iter().map(name).collect();
    assert_eq!(left, vec![ds.clone()], "only the DaemonSet pod stays");
    let pods = wait_until("web back to 7 active pods", WAIT, || {
        let p = srv.pods();
        (p.iter().filter(|x| name(x).starts_with("web-") && x["metadata"]["deletionTimestamp"].is_null()).count() == 7).then_some(p)
    });
    assert!(pods.iter().filter(|x| name(x).starts_with("web-")).all(|x| x["spec"]["nodeName"] != "agent1"));
    assert!(pod_named(&pods, "lonely").is_none(), "a bare pod is gone for good");
    assert!(pod_named(&pods, "once-").is_none(), "a completed Job pod is deleted, the Job not re-run");
    let pending = pod_named(&pods, "cache-").expect("cache recreated");
    assert_eq!(pending["status"]["phase"], "Pending");
    assert!(pending["spec"]["nodeName"].is_null());
    let (_, ev, _) = srv.kubectl(&["get", "events"]);
    assert!(ev.contains("FailedScheduling") && ev.contains("node(s) were unschedulable"), "{ev}");

    // uncordon: the Pending pod lands on agent1
    assert_eq!(srv.kubectl(&["uncordon", "agent1"]).1, "node/agent1 uncordoned\n");
    assert_eq!(srv.kubectl(&["uncordon", "agent1"]).1, "node/agent1 already uncordoned\n");
    wait_until("cache Running on agent1", WAIT, || {
        pods_on(&srv, "agent1").iter().any(|p| name(p).starts_with("cache-") && is_ready(p)).then_some(())
    });
    let (_, t, _) = srv.kubectl(&["get", "nodes", "agent1"]);
    assert!(t.contains(" Ready ") && !t.contains("SchedulingDisabled"), "{t}");

    // the audit log: cordon, then evictions, replacements elsewhere, uncordon
    let log = audit(&srv);
    let pos = |f: &dyn Fn(&Value) -> bool| log.iter().position(f);
    let cordon = pos(&|r| r["verb"] == "cordon" && r["name"] == "agent1").expect("cordon recorded");
    let first_evict = pos(&|r| r["verb"] == "evict").expect("evictions recorded");
    let uncordon = pos(&|r| r["verb"] == "uncordon" && r["name"] == "agent1").expect("uncordon recorded");
    assert!(cordon < first_evict && first_evict < uncordon);
    assert_eq!(log.iter().filter(|r| r["verb"] == "evict").count(), on1.len() - 1);
    assert!(log[first_evict..uncordon].iter().any(|r| r["verb"] == "create" && r["kind"] == "Pod" && r["name"].as_str().unwrap().starts_with("web-") && r["node"] != "agent1" && r["node"] != ""));
    assert!(log[uncordon..].iter().any(|r| r["verb"] == "bind" && r["node"] == "agent1"));
    assert!(log.iter().all(|r| r["time"].as_str().is_some_and(|t| t.len() == "2025-01-01T00:00:00.000Z".len() && t.ends_with('Z'))));
    assert!(log.iter().any(|r| r["verb"] == "status" && r["node"] == "agent2" && r["ready"] == true && r["kubeletVersion"] == "v1.33.4+k3s1"));

    // the API down: kubectl fails as it does on a refused connection
    srv.stop();
    let (code, _, err) = srv.kubectl(&["get", "--raw", "/readyz"]);
    assert_eq!(code, 1);
    assert_eq!(err, format!("The connection to the server {}:6443 was refused - did you specify the right host or port?\n", srv.ip));
    drop(agents);
}

#[test]
fn drain_times_out_on_a_node_whose_kubelet_is_gone() {
    let up = Registry::start();
    k3s_sim::upstream::seed(&up.url()).unwrap();
    let mut srv = node("srv-to", &up);
    srv.write("/etc/rancher/k3s/config.yaml", NO_ADDONS);
    srv.start_server(&[]);
    let mut a = node("agent1", &up);
    a.start_agent(&[("K3S_URL", &srv.url()), ("K3S_TOKEN", &srv.token())]);
    wait_until("agent1 Ready", WAIT, || srv.kubectl(&["get", "nodes", "agent1"]).1.contains(" Ready ").then_some(()));
    srv.write("/var/lib/rancher/k3s/server/manifests/web.yaml", "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 1\n  template:\n    metadata:\n      labels:\n        app: web\n    spec:\n      nodeSelector:\n        kubernetes.io/hostname: agent1\n      containers:\n      - name: c\n        image: rancher/mirrored-pause:3.6\n");
    let web = wait_until("web Running on agent1", WAIT, || pods_on(&srv, "agent1").into_iter().find(is_ready));
    a.stop(); // the kubelet never confirms the deletion
    let (code, out, err) = srv.kubectl(&["drain", "agent1", "--timeout=2s"]);
    assert_eq!(code, 1, "{out}");
    let n = name(&web);
    assert!(out.contains(&format!("evicting pod default/{n}")), "{out}");
    assert!(err.starts_with(&format!("There are pending pods in node \"agent1\" when an error occurred: drain did not complete within 2s\npod/{n}\n")), "{err}");
    assert!(err.ends_with("drain did not complete within 2s\n"), "{err}");
    let (_, t, _) = srv.kubectl(&["get", "pods"]);
    assert!(t.contains("Terminating"), "{t}");
}

#[test]
fn nodes_report_the_version_they_run_and_a_newer_agent_is_refused_until_the_server_is_upgraded() {
    let up = Registry::start();
    k3s_sim::upstream::seed(&up.url()).unwrap();
    let dir = temp_dir("releases");
    let v134 = dir.join("k3s-v1.34.3");
    k3s_sim::release::stamp_version(std::path::Path::new(K3S), &v134, "v1.34.3+k3s1").unwrap();
    let mut srv = node("srv-ver", &up);
    srv.write("/etc/rancher/k3s/config.yaml", NO_ADDONS);
    srv.start_server(&[]);
    let (token, url) = (srv.token(), srv.url());
    let mut a = node("agent1", &up);
    a.start_agent(&[("K3S_URL", &url), ("K3S_TOKEN", &token)]);
    wait_until("agent1 Ready on v1.33.4", WAIT, || {
        let t = srv.kubectl(&["get", "nodes", "agent1"]).1;
        (t.contains(" Ready ") && t.contains("v1.33.4+k3s1")).then_some(())
    });
    // the agent first: refused, every retry logged, never Ready on the new version
    a.stop();
    a.bin = Some(v134.clone());
    let from = a.log().len();
    a.start_agent(&[("K3S_URL", &url), ("K3S_TOKEN", &token)]);
    let refusal = "kubelet version v1.34.3+k3s1 is newer than kube-apiserver version v1.33.4+k3s1";
    wait_until("two refusals logged", WAIT, || (a.log()[from..].matches(refusal).count() >= 2).then_some(()));
    assert!(a.log()[from..].contains("level=error"));
    assert!(!a.log()[from..].contains("joined"));
    wait_until("agent1 NotReady", WAIT, || srv.kubectl(&["get", "nodes", "agent1"]).1.contains("NotReady").then_some(()));
    let j = srv.json(&["get", "node", "agent1"]);
    assert_eq!(j["status"]["nodeInfo"]["kubeletVersion"], "v1.33.4+k3s1", "the refused binary never reported");
    // the server upgraded: its node reports the new version, then the agent joins
    srv.stop();
    srv.bin = Some(v134.clone());
    srv.start_server(&[]);
    wait_until("both nodes Ready on v1.34.3", WAIT, || {
        let j = srv.json(&["get", "nodes"]);
        let items = j["items"].as_array().cloned().unwrap_or_default();
        let ok = items.len() == 2
            && items.iter().all(|n| n["status"]["nodeInfo"]["kubeletVersion"] == "v1.34.3+k3s1" && n["status"]["conditions"].as_array().unwrap().iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
        ok.then_some(())
    });
    let (_, t, _) = srv.kubectl(&["get", "nodes"]);
    assert!(t.lines().skip(1).all(|l| l.split_whitespace().nth(4) == Some("v1.34.3+k3s1")), "{t}");
    let (_, v, _) = srv.kubectl(&["version"]);
    assert!(v.contains("Server Version: v1.34.3+k3s1"), "{v}");
    // node transitions in the audit log: agent1 lost, then back on the new version
    let log = audit(&srv);
    let lost = log.iter().position(|r| r["verb"] == "status" && r["node"] == "agent1" && r["ready"] == false).expect("agent1 NotReady recorded");
    let back = log.iter().position(|r| r["verb"] == "status" && r["node"] == "agent1" && r["ready"] == true && r["kubeletVersion"] == "v1.34.3+k3s1").expect("agent1 Ready on v1.34.3 recorded");
    assert!(lost < back);
    let _ = std::fs::remove_dir_all(dir);
}
