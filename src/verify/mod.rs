//! Verify: read node and pod states from the server (kubectl over SSH), decide whether the cluster
//! is Ready, and when a pod is clearly stuck say why in the cluster's own terms. The parsing and the
//! diagnosis are pure (tested against real-shaped kubectl output under fixtures/kubectl/); only
//! `poll` touches a host.

pub mod airgap;
pub mod kube;

use serde::Serialize;

use kube::{Event, NodeStatus, PodStatus};

/// What is wrong with one pod (or node), as far as kubectl shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "cause", rename_all = "kebab-case")]
pub enum Cause {
    /// ErrImagePull / ImagePullBackOff for a container image.
    ImagePull { container: String, image: String, reason: String, message: String },
    /// The sandbox (pause) image cannot be had: nothing on the node starts.
    SandboxImage { image: String, message: String },
    CrashLoop { container: String, restarts: u64, last_reason: Option<String>, exit_code: Option<i64> },
    /// Running but a readiness probe fails.
    NotReady { container: String, probe: Option<String> },
    Unschedulable { message: String },
    /// The pod's node is not Ready.
    NodeNotReady { node: String, reason: String },
    /// Still starting (no verdict yet).
    Pending { phase: String, detail: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodProblem {
    pub pod: String,
    pub node: Option<String>,
    #[serde(flatten)]
    pub cause: Cause,
    /// Stuck: waiting longer will not help (BackOff repeated, sandbox image missing, unschedulable...).
    pub stuck: bool,
}

/// Snapshot of the cluster's health.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    pub nodes_ready: usize,
    pub nodes_total: usize,
    pub pods_ok: usize,
    pub pods_total: usize,
    pub not_ready_nodes: Vec<NodeStatus>,
    pub problems: Vec<PodProblem>,
}

impl Health {
    pub fn all_ready(&self) -> bool {
        self.nodes_total > 0 && self.nodes_ready == self.nodes_total && self.pods_ok == self.pods_total && self.pods_total > 0
    }
    /// Every remaining problem is stuck: waiting is pointless.
    pub fn stuck(&self) -> bool {
        !self.problems.is_empty() && self.problems.iter().all(|p| p.stuck)
    }
}

fn sandbox_image(msg: &str) -> Option<String> {
    // containerd: failed to get sandbox image "docker.io/rancher/mirrored-pause:3.6": ...
    let i = msg.find("sandbox image \"")? + "sandbox image \"".len();
    Some(msg[i..].split('"').next()?.to_string())
}

/// Why one pod is not Ready (None when it is fine).
pub fn diagnose(pod: &PodStatus, events: &[Event], nodes: &[NodeStatus]) -> Option<PodProblem> {
    if pod.ok() {
        return None;
    }
    let mk = |cause: Cause, stuck: bool| Some(PodProblem { pod: pod.id(), node: pod.node.clone(), cause, stuck });
    let mine: Vec<&Event> = events.iter().filter(|e| e.kind == "Pod" && e.name == pod.name && e.namespace == pod.namespace).collect();
    if let Some(n) = pod.node.as_ref().and_then(|n| nodes.iter().find(|x| &x.name == n))
        && !n.ready
    {
        return mk(Cause::NodeNotReady { node: n.name.clone(), reason: n.reason.clone().unwrap_or_default() }, true);
    }
    if let Some(e) = mine.iter().rev().find(|e| e.reason == "FailedCreatePodSandBox")
        && let Some(image) = sandbox_image(&e.message)
    {
        return mk(Cause::SandboxImage { image, message: e.message.clone() }, true);
    }
    if let Some(c) = pod.condition("PodScheduled")
        && c.status == "False"
    {
        let stuck = c.reason.as_deref() == Some("Unschedulable");
        return mk(Cause::Unschedulable { message: c.message.clone().unwrap_or_default() }, stuck);
    }
    for c in &pod.containers {
        match c.waiting_reason.as_deref() {
            Some(r @ ("ErrImagePull" | "ImagePullBackOff" | "InvalidImageName" | "ErrImageNeverPull")) => {
                // One ErrImagePull may be a blip; BackOff means containerd already retried.
                let backoffs = mine.iter().filter(|e| e.reason == "BackOff" || e.message.contains("Back-off pulling")).map(|e| e.count).sum::<u64>();
                let stuck = r != "ErrImagePull" || backoffs > 0 || c.waiting_message.as_deref().is_some_and(|m| m.contains("no match for platform"));
                return mk(
                    Cause::ImagePull {
                        container: c.name.clone(),
                        image: c.image.clone(),
                        reason: r.to_string(),
                        message: c.waiting_message.clone().unwrap_or_default(),
                    },
                    stuck,
                );
            }
            Some("CrashLoopBackOff") => {
                return mk(
                    Cause::CrashLoop {
                        container: c.name.clone(),
                        restarts: c.restart_count,
                        last_reason: c.last_terminated_reason.clone(),
                        exit_code: c.last_exit_code,
                    },
                    true,
                );
            }
            _ => {}
        }
    }
    if let Some(c) = pod.containers.iter().find(|c| c.running && !c.ready) {
        let probe = mine.iter().rev().find(|e| e.reason == "Unhealthy").map(|e| e.message.clone());
        let stuck = mine.iter().any(|e| e.reason == "Unhealthy" && e.count >= 3);
        return mk(Cause::NotReady { container: c.name.clone(), probe }, stuck);
    }
    let detail = pod
        .containers
        .iter()
        .find_map(|c| c.waiting_reason.clone())
        .unwrap_or_else(|| pod.condition("Ready").and_then(|c| c.reason.clone()).unwrap_or_default());
    mk(Cause::Pending { phase: pod.phase.clone(), detail }, false)
}

pub fn health(nodes: &[NodeStatus], pods: &[PodStatus], events: &[Event]) -> Health {
    Health {
        nodes_ready: nodes.iter().filter(|n| n.ready).count(),
        nodes_total: nodes.len(),
        pods_ok: pods.iter().filter(|p| p.ok()).count(),
        pods_total: pods.len(),
        not_ready_nodes: nodes.iter().filter(|n| !n.ready).cloned().collect(),
        problems: pods.iter().filter_map(|p| diagnose(p, events, nodes)).collect(),
    }
}

impl Cause {
    /// One line in kubectl's terms (the image explanation is added by the caller, who knows the mirrors).
    pub fn summary(&self) -> String {
        match self {
            Cause::ImagePull { container, image, reason, message } => {
                format!("{reason}: container {container} cannot pull {image}: {message}")
            }
            Cause::SandboxImage { image, .. } => {
                format!("ContainerCreating: the sandbox (pause) image {image} cannot be pulled, so no pod can start on this node")
            }
            Cause::CrashLoop { container, restarts, last_reason, exit_code } => format!(
                "CrashLoopBackOff: container {container} restarted {restarts} times (last: {}{})",
                last_reason.clone().unwrap_or_else(|| "?".into()),
                exit_code.map(|c| format!(", exit code {c}")).unwrap_or_default()
            ),
            Cause::NotReady { container, probe } => format!(
                "Running but not Ready: container {container}{}",
                probe.as_ref().map(|p| format!(": {p}")).unwrap_or_default()
            ),
            Cause::Unschedulable { message } => format!("Pending, unschedulable: {message}"),
            Cause::NodeNotReady { node, reason } => format!("node {node} is NotReady ({reason})"),
            Cause::Pending { phase, detail } => format!("{phase} {detail}"),
        }
    }

    /// The image a diagnosis is about, if any.
    pub fn image(&self) -> Option<&str> {
        match self {
            Cause::ImagePull { image, .. } | Cause::SandboxImage { image, .. } => Some(image),
            _ => None,
        }
    }
}

/// One look at the cluster from the server: nodes, pods and events (two kubectl calls, one SSH
/// connection).
/// Nodes, pods and events, as kubectl showed them.
pub type Snapshot = (Vec<NodeStatus>, Vec<PodStatus>, Vec<Event>);

/// Why the cluster could not be read.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum VerifyError {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Transport(#[from] crate::transport::TransportError),
    #[error("k3s kubectl {args}: {stderr}")]
    #[diagnostic(code(rvcluster::verify::kubectl))]
    Kubectl { args: String, stderr: String },
    #[error("kubectl's output could not be read: {0}")]
    #[diagnostic(code(rvcluster::verify::parse))]
    Parse(#[from] kube::KubeParseError),
}

/// The server as verify reads it: a connection and the path of its k3s binary (from its OS
/// profile).
pub struct Server<'a> {
    pub host: &'a mut dyn crate::transport::Host,
    pub k3s: String,
}

impl Server<'_> {
    fn kubectl(&mut self, args: &str, timeout: std::time::Duration) -> Result<crate::transport::ExecOutput, VerifyError> {
        Ok(self.host.exec(&kubectl_command(&self.k3s, args), None, Some(timeout))?)
    }
}

pub fn poll(server: &mut Server) -> Result<Snapshot, VerifyError> {
    let mut run = |args: &str| -> Result<String, VerifyError> {
        let out = server.kubectl(args, std::time::Duration::from_secs(60))?;
        if !out.success() {
            return Err(VerifyError::Kubectl { args: args.to_string(), stderr: out.stderr_str().trim().to_string() });
        }
        Ok(out.stdout_str())
    };
    let (nodes, pods) = kube::parse_list(&run("get nodes,pods -A -o json")?)?;
    let events = kube::parse_events(&run("get events -A -o json")?)?;
    Ok((nodes, pods, events))
}

/// How waiting ended.
#[derive(Debug, Clone)]
pub enum WaitResult {
    Ready(Health),
    /// Every remaining problem has been stuck for several looks in a row.
    Stuck(Health),
    TimedOut(Option<Health>),
}

/// Polls until every expected node is Ready and every pod is Ready or Succeeded, a failure is
/// clearly stuck (three looks in a row), or the timeout passes. `tick` sees every look.
pub fn wait(
    server: &mut Server,
    expected_nodes: usize,
    timeout: std::time::Duration,
    interval: std::time::Duration,
    tick: &mut dyn FnMut(&Health),
) -> WaitResult {
    let start = std::time::Instant::now();
    let mut last = None;
    let mut stuck_looks = 0;
    loop {
        if let Ok((nodes, pods, events)) = poll(server) {
            let h = health(&nodes, &pods, &events);
            tick(&h);
            if h.all_ready() && h.nodes_total >= expected_nodes {
                return WaitResult::Ready(h);
            }
            stuck_looks = if h.stuck() && h.nodes_total >= expected_nodes { stuck_looks + 1 } else { 0 };
            if stuck_looks >= 3 {
                return WaitResult::Stuck(h);
            }
            last = Some(h);
        }
        // Ctrl-C while waiting: stop looking (apply reports the interruption).
        if start.elapsed() >= timeout || crate::converge::interrupt::interrupted() {
            return WaitResult::TimedOut(last);
        }
        std::thread::sleep(interval);
    }
}

/// The last lines a crashing container printed (`kubectl logs --previous`, else the current run).
pub fn last_logs(server: &mut Server, ns: &str, pod: &str, container: &str, lines: usize) -> Vec<String> {
    for cmd in [logs_args(ns, pod, container, lines, true), logs_args(ns, pod, container, lines, false)] {
        if let Ok(o) = server.kubectl(&cmd, std::time::Duration::from_secs(30))
            && o.success()
            && !o.stdout_str().trim().is_empty()
        {
            return o.stdout_str().lines().map(str::to_string).collect();
        }
    }
    Vec::new()
}

/// `kubectl logs` arguments for one container (`previous`: the run before the current one).
/// Names come from the cluster (kubectl output), so each is quoted.
pub fn logs_args(ns: &str, pod: &str, container: &str, lines: usize, previous: bool) -> String {
    use crate::transport::cmd::quote;
    format!(
        "-n {} logs {} -c {} --tail {lines}{}",
        quote(ns),
        quote(pod),
        quote(container),
        if previous { " --previous" } else { "" }
    )
}

/// The command that runs `k3s kubectl ARGS` with the server's k3s binary.
pub fn kubectl_command(k3s: &str, args: &str) -> String {
    format!("{} kubectl {args}", crate::transport::cmd::quote(k3s))
}
