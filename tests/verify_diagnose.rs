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
