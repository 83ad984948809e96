//! Diagnosis of real-shaped kubectl output (fixtures/kubectl/verify/).

use std::path::Path;

use rvcluster::verify::kube::{parse_events, parse_list};
use rvcluster::verify::{Cause, health};

fn read(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/kubectl/verify").join(name)).unwrap()
}

#[test]
fn blog_first_attempt_reports_the_blogs_image_pull_backoff_pods() {
    let (nodes, pods) = parse_list(&read("blog-first-attempt.json")).unwrap();
    let events = parse_events(&read("blog-first-attempt-events.json")).unwrap();
    let h = health(&nodes, &pods, &events);
    assert_eq!((h.nodes_ready, h.nodes_total), (1, 1));
    assert_eq!((h.pods_ok, h.pods_total), (1, 5), "only redis is Ready");
    let pulls: Vec<(&str, &str)> = h
        .problems
        .iter()
        .filter_map(|p| match &p.cause {
            Cause::ImagePull { image, .. } => Some((p.pod.as_str(), image.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(
        pulls,
        [
            ("kube-system/helm-install-traefik-pv4hv", "rancher/klipper-helm:v0.9.12-build20251215"),
            ("kube-system/local-path-provisioner-7b7dc8d6f5-48jjf", "rancher/local-path-provisioner:v0.0.32"),
            ("kube-system/metrics-server-668d979685-jthzj", "rancher/mirrored-metrics-server:v0.8.0"),
        ]
    );
    // A single ErrImagePull is stuck here because containerd said there is no riscv64 variant.
    assert!(h.problems.iter().filter(|p| matches!(p.cause, Cause::ImagePull { .. })).all(|p| p.stuck));
    let coredns = h.problems.iter().find(|p| p.pod.contains("coredns")).unwrap();
    match &coredns.cause {
        Cause::NotReady { container, probe } => {
            assert_eq!(container, "coredns");
            assert!(probe.as_deref().unwrap().contains("Readiness probe failed"), "{probe:?}");
        }
        c => panic!("coredns: {c:?}"),
    }
    assert!(coredns.stuck, "12 failed probes");
    assert!(!h.all_ready());
}

#[test]
fn other_failures_each_get_their_cause() {
    let (nodes, pods) = parse_list(&read("failures.json")).unwrap();
    let events = parse_events(&read("failures-events.json")).unwrap();
    let h = health(&nodes, &pods, &events);
    assert_eq!((h.nodes_ready, h.nodes_total), (1, 2));
    assert_eq!(h.not_ready_nodes[0].name, "agent1");
    assert_eq!(h.not_ready_nodes[0].reason.as_deref(), Some("NodeStatusUnknown"));
    let by = |name: &str| h.problems.iter().find(|p| p.pod.contains(name)).unwrap_or_else(|| panic!("{name}"));
    match &by("crashy").cause {
        Cause::CrashLoop { container, restarts, last_reason, exit_code } => {
            assert_eq!((container.as_str(), *restarts), ("app", 7));
            assert_eq!((last_reason.as_deref(), *exit_code), (Some("Error"), Some(1)));
        }
        c => panic!("{c:?}"),
    }
    match &by("big").cause {
        Cause::Unschedulable { message } => assert!(message.contains("Insufficient memory")),
        c => panic!("{c:?}"),
    }
    assert!(by("big").stuck);
    match &by("web").cause {
        Cause::NodeNotReady { node, .. } => assert_eq!(node, "agent1"),
        c => panic!("{c:?}"),
    }
    match &by("svclb").cause {
        Cause::SandboxImage { image, .. } => assert_eq!(image, "docker.io/rancher/mirrored-pause:3.6"),
        c => panic!("{c:?}"),
    }
    assert!(!h.problems.iter().any(|p| p.pod.contains("helm-install-traefik-crd")), "a Succeeded Job pod is fine");
    assert!(h.stuck(), "every remaining problem is stuck");
}

#[test]
fn a_fresh_pod_is_pending_not_stuck() {
    let json = r#"{"apiVersion":"v1","kind":"List","items":[
      {"kind":"Node","metadata":{"name":"n"},"status":{"conditions":[{"type":"Ready","status":"True"}],"nodeInfo":{"kubeletVersion":"v1.34.3+k3s1"}}},
      {"kind":"Pod","metadata":{"name":"p","namespace":"default"},"spec":{"nodeName":"n","containers":[{"name":"c","image":"x"}]},
       "status":{"phase":"Pending","conditions":[{"type":"PodScheduled","status":"True"}],
                 "containerStatuses":[{"name":"c","image":"x","ready":false,"restartCount":0,"state":{"waiting":{"reason":"ContainerCreating"}}}]}}]}"#;
    let (nodes, pods) = parse_list(json).unwrap();
    let h = health(&nodes, &pods, &[]);
    assert_eq!(h.problems.len(), 1);
    assert!(!h.problems[0].stuck);
    assert!(!h.stuck());
    assert!(matches!(&h.problems[0].cause, Cause::Pending { detail, .. } if detail == "ContainerCreating"));
}

#[test]
fn malformed_output_is_an_error_not_a_panic() {
    assert!(parse_list("not json").is_err());
    assert!(parse_list("{}").is_err());
    assert!(parse_events("[]").is_err());
}

/// The alphabet of apimachinery's `rand.String` (and `rand.SafeEncodeString`): no vowels.
const ALPHANUMS: &str = "bcdfghjklmnpqrstvwxz2456789";

/// A `pod-template-hash`: `rand.SafeEncodeString` of the decimal FNV-32a hash of the pod
/// template, so each character encodes one decimal digit and the whole reads back as a u32.
fn decode_template_hash(h: &str) -> Option<u32> {
    let digits: Option<String> = h
        .bytes()
        .map(|c| (b'0'..=b'9').find(|d| ALPHANUMS.as_bytes()[*d as usize % ALPHANUMS.len()] == c).map(char::from))
        .collect();
    digits.filter(|d| !d.is_empty() && d.len() <= 10).and_then(|d| d.parse::<u32>().ok())
}

fn is_uuid_v4(s: &str) -> bool {
    let b = s.as_bytes();
    s.len() == 36
        && s.char_indices().all(|(i, c)| if [8, 13, 18, 23].contains(&i) { c == '-' } else { c.is_ascii_digit() || ('a'..='f').contains(&c) })
        && b[14] == b'4'
        && b"89ab".contains(&b[19])
}

/// What the fixtures claim to be Kubernetes output must be output Kubernetes can produce: names
/// the name generators can make, phases and conditions the kubelet and controllers set together.
/// (fixtures/kubectl/verify/README.md says where each rule comes from.)
fn kubernetes_could_produce(list: &str, events: &str) -> Vec<String> {
    use serde_json::Value;
    let list: Value = serde_json::from_str(&read(list)).unwrap();
    let events: Value = serde_json::from_str(&read(events)).unwrap();
    let str_of = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let mut bad = Vec::new();
    let items = list["items"].as_array().unwrap();
    let nodes: Vec<&Value> = items.iter().filter(|i| i["kind"] == "Node").collect();
    let node_ip = |name: &str| {
        nodes.iter().find(|n| n["metadata"]["name"] == name).and_then(|n| {
            n["status"]["addresses"].as_array()?.iter().find(|a| a["type"] == "InternalIP").map(|a| str_of(&a["address"]))
        })
    };
    let mut ips: Vec<String> = nodes.iter().filter_map(|n| node_ip(n["metadata"]["name"].as_str()?)).collect();
    let mut cidrs: Vec<String> = nodes.iter().map(|n| str_of(&n["spec"]["podCIDR"])).collect();
    let n = ips.len();
    ips.sort();
    ips.dedup();
    cidrs.sort();
    cidrs.dedup();
    if ips.len() != n || cidrs.len() != nodes.len() {
        bad.push("two nodes share an InternalIP or a podCIDR".into());
    }
    for node in &nodes {
        let name = str_of(&node["metadata"]["name"]);
        let conds = node["status"]["conditions"].as_array().unwrap();
        let ready = conds.iter().find(|c| c["type"] == "Ready").unwrap();
        // The node lifecycle controller marks every condition Unknown and taints the node.
        if ready["status"] == "Unknown" {
            if !conds.iter().all(|c| c["status"] == "Unknown" && c["reason"] == "NodeStatusUnknown") {
                bad.push(format!("node {name}: Ready Unknown but other conditions are not"));
            }
            let tainted = node["spec"]["taints"].as_array().is_some_and(|t| {
                t.iter().any(|t| t["key"] == "node.kubernetes.io/unreachable" && t["effect"] == "NoExecute")
            });
            if !tainted {
                bad.push(format!("node {name}: unreachable but not tainted node.kubernetes.io/unreachable:NoExecute"));
            }
        }
    }
    let cond = |p: &Value, t: &str| p["status"]["conditions"].as_array().and_then(|cs| cs.iter().find(|c| c["type"] == t).cloned());
    let suffix_ok = |s: &str| s.len() == 5 && s.chars().all(|c| ALPHANUMS.contains(c));
    let evs = events["items"].as_array().unwrap();
    for p in items.iter().filter(|i| i["kind"] == "Pod") {
        let name = str_of(&p["metadata"]["name"]);
        let labels = &p["metadata"]["labels"];
        let owner = &p["metadata"]["ownerReferences"][0];
        let (okind, oname) = (str_of(&owner["kind"]), str_of(&owner["name"]));
        let phase = str_of(&p["status"]["phase"]);
        let mut wrong = |what: String| bad.push(format!("pod {name}: {what}"));
        if !is_uuid_v4(&str_of(&p["metadata"]["uid"])) || !is_uuid_v4(&str_of(&owner["uid"])) {
            wrong("uids are random (v4) UUIDs".into());
        }
        // Names: the controller's generateName `<owner>-` plus rand.String(5).
        match name.strip_prefix(&format!("{oname}-")) {
            Some(s) if suffix_ok(s) => {}
            _ => wrong(format!("not `{oname}-` and 5 characters of {ALPHANUMS}")),
        }
        let api = match okind.as_str() {
            "ReplicaSet" | "DaemonSet" => "apps/v1",
            "Job" => "batch/v1",
            k => {
                wrong(format!("unexpected owner kind {k}"));
                ""
            }
        };
        if owner["apiVersion"] != api {
            wrong(format!("{okind} owners are {api}"));
        }
        if okind == "ReplicaSet" {
            let hash = oname.rsplit_once('-').map(|(_, h)| h).unwrap_or_default();
            if decode_template_hash(hash).is_none() || labels["pod-template-hash"] != hash {
                wrong(format!("`{hash}` is not a pod-template-hash (SafeEncodeString of a u32) or not the pod's label"));
            }
        }
        if okind == "Job" {
            if labels["job-name"] != oname.as_str() || labels["controller-uid"] != owner["uid"] {
                wrong("Job pods carry job-name and controller-uid labels".into());
            }
            if !["OnFailure", "Never"].contains(&p["spec"]["restartPolicy"].as_str().unwrap_or("Always")) {
                wrong("a Job's pods restart OnFailure or Never".into());
            }
        }
        // Phase: Running once every container has been created; Pending before.
        let statuses = p["status"]["containerStatuses"].as_array().cloned().unwrap_or_default();
        let created = |c: &Value| {
            c["state"].get("running").is_some()
                || c["state"].get("terminated").is_some()
                || c["lastState"].get("terminated").is_some()
                || c["restartCount"].as_u64().unwrap_or(0) > 0
        };
        if phase == "Pending" && statuses.iter().any(created) {
            wrong("Pending with a container that was created (a restarting or crash-looping pod is Running)".into());
        }
        if statuses.iter().any(|c| c["state"]["waiting"]["reason"] == "CrashLoopBackOff") && phase != "Running" {
            wrong("CrashLoopBackOff outside phase Running".into());
        }
        if phase == "Succeeded" {
            let all_zero = statuses.iter().all(|c| c["state"]["terminated"]["exitCode"] == 0);
            let ready = cond(p, "Ready").unwrap_or_default();
            if !all_zero || ready["status"] != "False" || ready["reason"] != "PodCompleted" || p["spec"]["restartPolicy"] == "Always" {
                wrong("Succeeded: every container exited 0, Ready False (PodCompleted), restartPolicy not Always".into());
            }
            if cond(p, "PodReadyToStartContainers").is_some_and(|c| c["status"] != "False") {
                wrong("Succeeded: the sandbox is torn down (PodReadyToStartContainers False)".into());
            }
        }
        // Scheduling.
        let scheduled = cond(p, "PodScheduled").is_some_and(|c| c["status"] == "True");
        let node = p["spec"]["nodeName"].as_str();
        if scheduled != node.is_some() {
            wrong("PodScheduled and spec.nodeName disagree".into());
        }
        if let Some(n) = node
            && node_ip(n).is_none_or(|ip| p["status"]["hostIP"] != ip.as_str())
        {
            wrong(format!("hostIP is not the InternalIP of node {n}"));
        }
        let requests_memory = p["spec"]["containers"].as_array().unwrap().iter().any(|c| c["resources"]["requests"].get("memory").is_some());
        if cond(p, "PodScheduled").is_some_and(|c| c["message"].as_str().is_some_and(|m| m.contains("Insufficient memory"))) && !requests_memory {
            wrong("unschedulable for memory without a memory request".into());
        }
        if (p["status"]["qosClass"] == "BestEffort") == requests_memory {
            wrong("qosClass BestEffort exactly when no container requests resources".into());
        }
        // The sandbox: PodReadyToStartContainers True means it exists and has an IP; a pod whose
        // sandbox cannot be created has it False and no IP.
        let sandbox = cond(p, "PodReadyToStartContainers").map(|c| c["status"] == "True");
        let sandbox_failed = evs.iter().any(|e| e["involvedObject"]["name"] == name.as_str() && e["reason"] == "FailedCreatePodSandBox");
        if sandbox == Some(true) && (sandbox_failed || p["status"].get("podIP").is_none()) {
            wrong("PodReadyToStartContainers True without a sandbox (failed sandbox event, or no pod IP)".into());
        }
        if sandbox_failed && (sandbox != Some(false) || p["status"].get("podIP").is_some()) {
            wrong("a failed sandbox means PodReadyToStartContainers False and no pod IP".into());
        }
        if cond(p, "Ready").is_some_and(|c| c["status"] == "True") && cond(p, "ContainersReady").is_some_and(|c| c["status"] != "True") {
            wrong("Ready without ContainersReady".into());
        }
    }
    for e in evs {
        let io = &e["involvedObject"];
        let ename = str_of(&e["metadata"]["name"]);
        let suffix_hex = ename
            .strip_prefix(&format!("{}.", str_of(&io["name"])))
            .is_some_and(|s| s.len() == 16 && s.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        if !suffix_hex {
            bad.push(format!("event {ename}: named <object>.<16 hex digits of its timestamp>"));
        }
        let host = str_of(&e["source"]["host"]);
        if !nodes.iter().any(|n| n["metadata"]["name"] == host.as_str()) {
            bad.push(format!("event {ename}: source.host `{host}` is not a node"));
        }
    }
    bad
}

#[test]
fn fixtures_are_states_kubernetes_can_produce() {
    for (list, events) in [("blog-first-attempt.json", "blog-first-attempt-events.json"), ("failures.json", "failures-events.json")] {
        let bad = kubernetes_could_produce(list, events);
        assert!(bad.is_empty(), "{list}:\n  {}", bad.join("\n  "));
    }
}

#[test]
fn name_rules_match_the_generators() {
    // Real hashes from a k3s cluster decode to 32-bit values; vowels and 0/1/3 never appear.
    assert_eq!(decode_template_hash("7b7dc8d6f5"), Some(3638748291));
    assert_eq!(decode_template_hash("668d979685"), Some(2248535241));
    assert_eq!(decode_template_hash("7f9c8d"), Some(395748), "valid, if a short hash");
    assert_eq!(decode_template_hash("a1b2c"), None);
    assert_eq!(decode_template_hash("9ddddddddd"), None, "5888888888 is more than 32 bits");
    assert!(is_uuid_v4("4c1f0e7a-9b2d-4f3e-8a6c-5d7e9f1b2c30"));
    assert!(!is_uuid_v4("u-crashy-6d4cf56db6-x2x9q"));
}
