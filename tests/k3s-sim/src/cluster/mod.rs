//! The cluster's API objects as the server keeps them (nodes, workloads, pods, events, secrets),
//! the controllers that turn workloads into pods and schedule them, and the rendering of objects
//! in the real Kubernetes JSON shape. Pure data + logic: persistence and transport live in
//! `server`/`api`, image pulls in `kubelet`.
use crate::manifests::WorkloadSpec;
use crate::util::{random_suffix, rfc3339, template_hash};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Node {
    pub name: String,
    pub uid: String,
    pub internal_ip: String,
    pub server: bool,
    pub index: u32,
    pub created_ms: u64,
    pub last_heartbeat_ms: u64,
    pub ready: bool,
    pub os_image: String,
    pub kernel: String,
    pub arch: String,
    pub kubelet_version: String,
    pub container_runtime: String,
    /// spec.unschedulable (kubectl cordon); shown with the node.kubernetes.io/unschedulable taint
    #[serde(default)]
    pub unschedulable: bool,
    /// when it was cordoned (the taint's timeAdded)
    #[serde(default)]
    pub unschedulable_since_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum CState {
    Waiting { reason: String, message: Option<String> },
    Running { started_ms: u64 },
    Terminated { reason: String, exit_code: i32, started_ms: u64, finished_ms: u64 },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ContainerStatus {
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub state: CState,
    pub ready: bool,
    pub restart_count: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct PodStatus {
    pub sandbox_ready: bool,
    pub containers: Vec<ContainerStatus>,
    #[serde(default)]
    pub init_containers: Vec<ContainerStatus>,
    pub start_ms: Option<u64>,
    /// last time each condition flipped: (ready, containers_ready) transition times
    pub ready_since_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub workload: String,
    pub owner_kind: String,
    pub owner_name: String,
    pub node: String,
    pub ip: String,
    pub created_ms: u64,
    pub containers: Vec<(String, String)>,
    #[serde(default)]
    pub init_containers: Vec<(String, String)>,
    #[serde(default)]
    pub pull_policy: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub restart_policy: String,
    pub template_hash: String,
    pub status: PodStatus,
    /// metadata.deletionTimestamp: evicted/deleted, waiting for its kubelet to confirm
    #[serde(default)]
    pub deleting_ms: Option<u64>,
    /// mounts an emptyDir volume
    #[serde(default)]
    pub empty_dir: bool,
}

impl Pod {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
    pub fn phase(&self) -> &'static str {
        let cs = &self.status.containers;
        if !cs.is_empty() && cs.iter().all(|c| matches!(c.state, CState::Terminated { exit_code: 0, .. })) {
            return "Succeeded";
        }
        if self.status.sandbox_ready && !cs.is_empty() && cs.iter().all(|c| !matches!(c.state, CState::Waiting { .. })) {
            return "Running";
        }
        "Pending"
    }
    pub fn pull_policy_of(&self, container: &str, image: &str) -> String {
        crate::manifests::effective_pull_policy(image, self.pull_policy.get(container).map(String::as_str))
    }
    pub fn ready(&self) -> bool {
        !self.status.containers.is_empty() && self.status.containers.iter().all(|c| c.ready)
    }
    /// Not being deleted (controllers count only these, as the ReplicaSet controller's
    /// FilterActivePods does).
    pub fn active(&self) -> bool {
        self.deleting_ms.is_none()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Workload {
    pub spec: WorkloadSpec,
    pub uid: String,
    /// the manifest file (relative to the manifests dir) it came from; None for derived ones
    pub source: Option<String>,
    /// derived from another workload (helm chart -> deployment, service -> svclb daemonset)
    pub parent: Option<String>,
    pub created_ms: u64,
    pub done: bool,
}

impl Workload {
    pub fn key(&self) -> String {
        wkey(&self.spec.kind, &self.spec.namespace, &self.spec.name)
    }
}

pub fn wkey(kind: &str, ns: &str, name: &str) -> String {
    format!("{kind}/{ns}/{name}")
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Event {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub object_kind: String,
    pub object_name: String,
    pub object_uid: String,
    pub reason: String,
    pub message: String,
    pub type_: String,
    pub count: u32,
    pub first_ms: u64,
    pub last_ms: u64,
    pub component: String,
    pub host: String,
}

/// An event as a kubelet/controller reports it (the server dedups into `Event`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EventReport {
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    pub reason: String,
    pub message: String,
    pub warning: bool,
    pub component: String,
    pub host: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Secret {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub type_: String,
    pub data: BTreeMap<String, String>,
    pub created_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct State {
    pub version: String,
    pub nodes: BTreeMap<String, Node>,
    pub workloads: BTreeMap<String, Workload>,
    pub pods: BTreeMap<String, Pod>,
    pub events: Vec<Event>,
    pub secrets: BTreeMap<String, Secret>,
    pub next_node_index: u32,
    pub next_ip: BTreeMap<String, u32>,
    /// file -> content hash of the manifests applied
    pub applied: BTreeMap<String, String>,
    /// the servicelb addon is enabled
    pub servicelb: bool,
    /// the klipper-lb image for svclb pods
    pub lb_image: String,
    /// container logs the kubelets reported: "ns/pod/container" -> lines
    pub logs: BTreeMap<String, Vec<String>>,
    /// last (Ready, kubeletVersion) recorded in the audit log per node
    #[serde(default)]
    pub reported: BTreeMap<String, (bool, String)>,
    /// audit records not yet written (the server appends them to server/logs/audit.log)
    #[serde(skip)]
    pub audit: Vec<Value>,
}

pub fn uid() -> String {
    let h = crate::util::random_hex(16);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// One audit record (a line of server/logs/audit.log): time with milliseconds, verb, kind, name.
pub fn audit_record(now: u64, verb: &str, kind: &str, namespace: Option<&str>, name: &str) -> Value {
    let mut v = json!({"time": crate::util::rfc3339_ms(now), "verb": verb, "kind": kind, "name": name});
    if let Some(ns) = namespace {
        v["namespace"] = json!(ns);
    }
    v
}

impl State {
    pub fn audit(&mut self, now: u64, verb: &str, kind: &str, namespace: Option<&str>, name: &str, extra: &[(&str, Value)]) {
        let mut v = audit_record(now, verb, kind, namespace, name);
        for (k, x) in extra {
            v[*k] = x.clone();
        }
        self.audit.push(v);
    }

    /// Record a `status` audit line for every node whose (Ready, kubeletVersion) changed since
    /// the last one recorded.
    pub fn audit_node_transitions(&mut self, now: u64, grace_ms: u64) {
        let current: Vec<(String, bool, String)> = self.nodes.values().map(|n| (n.name.clone(), node_ready(n, now, grace_ms), n.kubelet_version.clone())).collect();
        for (name, ready, version) in current {
            if self.reported.get(&name) != Some(&(ready, version.clone())) {
                self.reported.insert(name.clone(), (ready, version.clone()));
                self.audit(now, "status", "Node", None, &name, &[("node", json!(name)), ("ready", json!(ready)), ("kubeletVersion", json!(version))]);
            }
        }
        self.reported.retain(|n, _| self.nodes.contains_key(n));
    }

    /// cordon (true) / uncordon (false). Some(changed), None if there is no such node.
    pub fn set_unschedulable(&mut self, name: &str, on: bool, now: u64) -> Option<bool> {
        let n = self.nodes.get_mut(name)?;
        if n.unschedulable == on {
            return Some(false);
        }
        n.unschedulable = on;
        n.unschedulable_since_ms = now;
        self.audit(now, if on { "cordon" } else { "uncordon" }, "Node", None, name, &[]);
        Some(true)
    }

    /// Eviction (or DELETE with --disable-eviction) of a pod: it gets a deletionTimestamp and
    /// is removed once its node's kubelet confirms (next sync). A pod not yet bound to a node
    /// goes at once. Returns false if there is no such pod.
    pub fn evict(&mut self, ns: &str, name: &str, verb: &str, now: u64) -> bool {
        let k = format!("{ns}/{name}");
        let Some(p) = self.pods.get_mut(&k) else { return false };
        let node = p.node.clone();
        if p.deleting_ms.is_none() {
            p.deleting_ms = Some(now);
        }
        if node.is_empty() {
            self.pods.remove(&k);
        }
        self.audit(now, verb, "Pod", Some(ns), name, &[("node", json!(node))]);
        true
    }

    pub fn add_event(&mut self, r: &EventReport, now: u64) {
        if let Some(e) = self.events.iter_mut().find(|e| e.object_uid == r.pod_uid && e.reason == r.reason && e.message == r.message) {
            e.count += 1;
            e.last_ms = now;
            return;
        }
        let seq = crate::util::random_hex(8);
        self.events.push(Event {
            namespace: r.namespace.clone(),
            name: format!("{}.{}", r.pod, &seq[..16.min(seq.len())]),
            uid: uid(),
            object_kind: "Pod".into(),
            object_name: r.pod.clone(),
            object_uid: r.pod_uid.clone(),
            reason: r.reason.clone(),
            message: r.message.clone(),
            type_: if r.warning { "Warning" } else { "Normal" }.into(),
            count: 1,
            first_ms: now,
            last_ms: now,
            component: r.component.clone(),
            host: r.host.clone(),
        });
        if self.events.len() > 2000 {
            self.events.drain(..500);
        }
    }

    /// Insert or update workloads from one manifest file; prune the file's objects no longer in it.
    pub fn apply_file(&mut self, source: &str, specs: Vec<WorkloadSpec>, now: u64) {
        let keys: Vec<String> = specs.iter().map(|s| wkey(&s.kind, &s.namespace, &s.name)).collect();
        let stale: Vec<String> = self
            .workloads
            .values()
            .filter(|w| w.source.as_deref() == Some(source) && !keys.contains(&w.key()))
            .map(|w| w.key())
            .collect();
        for k in stale {
            self.delete_workload(&k);
        }
        for spec in specs {
            let k = wkey(&spec.kind, &spec.namespace, &spec.name);
            match self.workloads.get_mut(&k) {
                Some(w) if w.spec == spec => {
                    w.source = Some(source.to_string());
                }
                Some(w) => {
                    if w.spec.kind == "HelmChart" && w.spec.chart_image != spec.chart_image {
                        w.done = false; // re-run the install job on chart changes
                    }
                    w.spec = spec;
                    w.source = Some(source.to_string());
                }
                None => {
                    self.workloads.insert(k, Workload { spec, uid: uid(), source: Some(source.to_string()), parent: None, created_ms: now, done: false });
                }
            }
        }
    }

    /// Delete a workload, what it derived, and their pods (ownerReference garbage collection).
    pub fn delete_workload(&mut self, key: &str) {
        self.workloads.remove(key);
        let children: Vec<String> = self.workloads.values().filter(|w| w.parent.as_deref() == Some(key)).map(|w| w.key()).collect();
        for c in children {
            self.delete_workload(&c);
        }
        self.pods.retain(|_, p| p.workload != key);
    }

    /// Remove every object that came from a (disabled) addon file or directory.
    pub fn uninstall_source(&mut self, relpath: &str) {
        let keys: Vec<String> = self.workloads.values().filter(|w| w.source.as_deref() == Some(relpath)).map(|w| w.key()).collect();
        for k in keys {
            self.delete_workload(&k);
        }
        self.applied.remove(relpath);
    }

    fn alloc_ip(&mut self, node: &str) -> String {
        let idx = self.nodes.get(node).map(|n| n.index).unwrap_or(0);
        let n = self.next_ip.entry(node.to_string()).or_insert(2);
        let ip = format!("10.42.{idx}.{}", *n);
        *n = if *n >= 254 { 2 } else { *n + 1 };
        ip
    }

    fn pick_node(&self, spec: &WorkloadSpec) -> Option<String> {
        if let Some(n) = &spec.node_name {
            return Some(n.clone()); // spec.nodeName bypasses the scheduler
        }
        let fits = |n: &Node| n.ready && !n.unschedulable && spec.node_selector_host.as_ref().is_none_or(|h| h == &n.name);
        let load = |n: &str| self.pods.values().filter(|p| p.node == n && p.owner_kind != "DaemonSet" && p.active()).count();
        self.nodes.values().filter(|n| fits(n)).min_by_key(|n| (load(&n.name), n.index)).map(|n| n.name.clone())
    }

    fn new_pod(&mut self, w: &Workload, name: String, node: String, hash: &str, now: u64) -> Pod {
        let ip = if node.is_empty() { String::new() } else { self.alloc_ip(&node) };
        let mut labels = w.spec.labels.clone();
        if w.spec.kind == "Deployment" {
            labels.insert("pod-template-hash".into(), hash.to_string());
        }
        Pod {
            namespace: w.spec.namespace.clone(),
            name,
            uid: uid(),
            workload: w.key(),
            owner_kind: match w.spec.kind.as_str() {
                "Deployment" => "ReplicaSet".into(),
                k => k.to_string(),
            },
            owner_name: if w.spec.kind == "Deployment" { format!("{}-{hash}", w.spec.name) } else { w.spec.name.clone() },
            node,
            ip,
            created_ms: now,
            containers: w.spec.containers.clone(),
            init_containers: w.spec.init_containers.clone(),
            pull_policy: w.spec.pull_policy.clone(),
            labels,
            restart_policy: w.spec.restart_policy.clone(),
            template_hash: hash.to_string(),
            status: PodStatus::default(),
            deleting_ms: None,
            empty_dir: w.spec.empty_dir,
        }
    }

    /// The scheduler's message when no node fits (as kube-scheduler words FailedScheduling).
    fn unschedulable_message(&self) -> String {
        let total = self.nodes.len();
        let cordoned = self.nodes.values().filter(|n| n.unschedulable).count();
        let not_ready = self.nodes.values().filter(|n| !n.unschedulable && !n.ready).count();
        let mut why = Vec::new();
        if not_ready > 0 {
            why.push(format!("{not_ready} node(s) had untolerated taint {{node.kubernetes.io/unreachable: }}"));
        }
        if cordoned > 0 {
            why.push(format!("{cordoned} node(s) were unschedulable"));
        }
        let why = if why.is_empty() { String::new() } else { format!(" {}.", why.join(", ")) };
        format!("0/{total} nodes are available:{why} preemption: 0/{total} nodes are available: {total} Preemption is not helpful for scheduling.")
    }

    fn schedule(&mut self, pod: Pod, now: u64) {
        self.audit(now, "create", "Pod", Some(&pod.namespace), &pod.name, &[("node", json!(pod.node))]);
        if pod.node.is_empty() {
            let r = EventReport {
                namespace: pod.namespace.clone(),
                pod: pod.name.clone(),
                pod_uid: pod.uid.clone(),
                reason: "FailedScheduling".into(),
                message: self.unschedulable_message(),
                warning: true,
                component: "default-scheduler".into(),
                host: String::new(),
            };
            self.add_event(&r, now);
            self.pods.insert(pod.key(), pod);
            return;
        }
        let r = EventReport {
            namespace: pod.namespace.clone(),
            pod: pod.name.clone(),
            pod_uid: pod.uid.clone(),
            reason: "Scheduled".into(),
            message: format!("Successfully assigned {}/{} to {}", pod.namespace, pod.name, pod.node),
            warning: false,
            component: "default-scheduler".into(),
            host: String::new(),
        };
        self.add_event(&r, now);
        self.pods.insert(pod.key(), pod);
    }

    /// One pass of the controllers (deployment, daemonset, job, helm, servicelb, pod GC).
    pub fn reconcile(&mut self, now: u64) {
        // derived workloads: HelmChart -> helm-install job (+ deployment, svclb when done);
        // LoadBalancer Service -> svclb DaemonSet
        let snapshot: Vec<Workload> = self.workloads.values().cloned().collect();
        for w in &snapshot {
            match w.spec.kind.as_str() {
                "HelmChart" => {
                    let job = self.derived(w, "Job", &format!("helm-install-{}", w.spec.name), vec![("helm".into(), w.spec.job_image.clone().unwrap_or_default())], now);
                    let job_done = self.workloads.get(&job).map(|j| j.done).unwrap_or(false);
                    if job_done
                        && let Some(img) = &w.spec.chart_image {
                            let d = self.derived(w, "Deployment", &w.spec.name, vec![(w.spec.name.clone(), img.clone())], now);
                            if !w.spec.lb_ports.is_empty()
                                && let Some(dw) = self.workloads.get(&d).cloned() {
                                    let mut svc = dw.clone();
                                    svc.spec.kind = "Service".into();
                                    svc.spec.lb_ports = w.spec.lb_ports.clone();
                                    self.svclb(&svc, &d, now);
                                }
                        }
                }
                "Service" => self.svclb(w, &w.key(), now),
                _ => {}
            }
        }
        let nodes: Vec<String> = self.nodes.keys().cloned().collect();
        let snapshot: Vec<Workload> = self.workloads.values().cloned().collect();
        for w in snapshot {
            let key = w.key();
            let hash = template_hash(&serde_json::to_string(&(&w.spec.containers, &w.spec.init_containers, &w.spec.pull_policy)).unwrap_or_default());
            match w.spec.kind.as_str() {
                "Deployment" => {
                    // replace pods of an older template (rolling update collapsed to one step)
                    self.pods.retain(|_, p| !(p.workload == key && p.template_hash != hash));
                    let have = self.pods.values().filter(|p| p.workload == key && p.active()).count() as u32;
                    for _ in have..w.spec.replicas {
                        let node = self.pick_node(&w.spec).unwrap_or_default(); // none fits: Pending
                        let name = format!("{}-{hash}-{}", w.spec.name, random_suffix(5));
                        let pod = self.new_pod(&w, name, node, &hash, now);
                        self.schedule(pod, now);
                    }
                }
                "DaemonSet" => {
                    self.pods.retain(|_, p| !(p.workload == key && p.template_hash != hash));
                    for n in &nodes {
                        if self.pods.values().any(|p| p.workload == key && &p.node == n) {
                            continue;
                        }
                        let name = format!("{}-{}", w.spec.name, random_suffix(5));
                        let pod = self.new_pod(&w, name, n.clone(), &hash, now);
                        self.schedule(pod, now);
                    }
                }
                "Job" => {
                    let pod = self.pods.values().find(|p| p.workload == key && p.active());
                    match pod {
                        Some(p) if p.phase() == "Succeeded" => {
                            if let Some(wm) = self.workloads.get_mut(&key) {
                                wm.done = true;
                            }
                        }
                        Some(_) => {}
                        None if !w.done => {
                            let node = self.pick_node(&w.spec).unwrap_or_default();
                            let name = format!("{}-{}", w.spec.name, random_suffix(5));
                            let pod = self.new_pod(&w, name, node, &hash, now);
                            self.schedule(pod, now);
                        }
                        None => {}
                    }
                }
                "Pod" => {
                    let pk = format!("{}/{}", w.spec.namespace, w.spec.name);
                    if !self.pods.contains_key(&pk) && !w.done
                        && let Some(node) = self.pick_node(&w.spec) {
                            let pod = self.new_pod(&w, w.spec.name.clone(), node, &hash, now);
                            self.schedule(pod, now);
                            if let Some(wm) = self.workloads.get_mut(&key) {
                                wm.done = true; // a bare pod is created once; deleting it is final
                            }
                        }
                }
                _ => {}
            }
        }
        // the scheduler: bind Pending pods once a node fits
        let unbound: Vec<String> = self.pods.values().filter(|p| p.node.is_empty() && p.active()).map(|p| p.key()).collect();
        for k in unbound {
            let Some(spec) = self.pods.get(&k).and_then(|p| self.workloads.get(&p.workload)).map(|w| w.spec.clone()) else { continue };
            match self.pick_node(&spec) {
                Some(node) => {
                    let ip = self.alloc_ip(&node);
                    let Some(p) = self.pods.get_mut(&k) else { continue };
                    p.node = node.clone();
                    p.ip = ip;
                    let r = EventReport {
                        namespace: p.namespace.clone(),
                        pod: p.name.clone(),
                        pod_uid: p.uid.clone(),
                        reason: "Scheduled".into(),
                        message: format!("Successfully assigned {}/{} to {node}", p.namespace, p.name),
                        warning: false,
                        component: "default-scheduler".into(),
                        host: String::new(),
                    };
                    let (ns, name) = (p.namespace.clone(), p.name.clone());
                    self.add_event(&r, now);
                    self.audit(now, "bind", "Pod", Some(&ns), &name, &[("node", json!(node))]);
                }
                None => {
                    let Some(p) = self.pods.get(&k) else { continue };
                    let r = EventReport {
                        namespace: p.namespace.clone(),
                        pod: p.name.clone(),
                        pod_uid: p.uid.clone(),
                        reason: "FailedScheduling".into(),
                        message: self.unschedulable_message(),
                        warning: true,
                        component: "default-scheduler".into(),
                        host: String::new(),
                    };
                    self.add_event(&r, now);
                }
            }
        }
        // pods whose workload or node is gone
        let wl: Vec<String> = self.workloads.keys().cloned().collect();
        self.pods.retain(|_, p| wl.contains(&p.workload) && (p.node.is_empty() || self.nodes.contains_key(&p.node)));
    }

    fn derived(&mut self, parent: &Workload, kind: &str, name: &str, containers: Vec<(String, String)>, now: u64) -> String {
        let k = wkey(kind, &parent.spec.namespace, name);
        let spec = WorkloadSpec {
            kind: kind.into(),
            namespace: parent.spec.namespace.clone(),
            name: name.into(),
            containers,
            init_containers: vec![],
            pull_policy: BTreeMap::new(),
            replicas: 1,
            labels: BTreeMap::from([("app".to_string(), name.to_string())]),
            node_name: None,
            node_selector_host: None,
            chart_image: None,
            job_image: None,
            lb_ports: vec![],
            restart_policy: if kind == "Job" { "OnFailure".into() } else { "Always".into() },
            // the traefik chart's Deployment mounts emptyDir `data` and `tmp` volumes
            empty_dir: kind == "Deployment",
        };
        match self.workloads.get_mut(&k) {
            Some(w) if w.spec.containers != spec.containers => {
                w.spec = spec;
                w.done = false;
            }
            Some(_) => {}
            None => {
                self.workloads.insert(k.clone(), Workload { spec, uid: uid(), source: None, parent: Some(parent.key()), created_ms: now, done: false });
            }
        }
        k
    }

    fn svclb(&mut self, svc: &Workload, parent_key: &str, now: u64) {
        if !self.servicelb || svc.spec.lb_ports.is_empty() {
            return;
        }
        let name = format!("svclb-{}-{}", svc.spec.name, &crate::util::sha256_hex(svc.uid.as_bytes())[..8]);
        let containers = svc.spec.lb_ports.iter().map(|p| (format!("lb-tcp-{p}"), self.lb_image.clone())).collect();
        let mut parent = svc.clone();
        parent.spec.namespace = "kube-system".into();
        let k = self.derived(&parent, "DaemonSet", &name, containers, now);
        if let Some(w) = self.workloads.get_mut(&k) {
            w.parent = Some(parent_key.to_string());
        }
    }

    pub fn delete_node(&mut self, name: &str) -> bool {
        let had = self.nodes.remove(name).is_some();
        self.pods.retain(|_, p| p.node != name);
        had
    }
}

// ---------- Kubernetes JSON shape ----------

fn meta(name: &str, ns: Option<&str>, uid: &str, created: u64) -> Value {
    let mut m = json!({"name": name, "uid": uid, "resourceVersion": (created % 1_000_000).to_string(), "creationTimestamp": rfc3339(created)});
    if let Some(ns) = ns {
        m["namespace"] = json!(ns);
    }
    m
}

pub fn node_json(n: &Node, now: u64, grace_ms: u64) -> Value {
    let mut labels = json!({
        "beta.kubernetes.io/arch": n.arch, "beta.kubernetes.io/os": "linux", "kubernetes.io/arch": n.arch,
        "kubernetes.io/hostname": n.name, "kubernetes.io/os": "linux", "beta.kubernetes.io/instance-type": "k3s",
        "node.kubernetes.io/instance-type": "k3s",
    });
    if n.server {
        labels["node-role.kubernetes.io/control-plane"] = json!("true");
        labels["node-role.kubernetes.io/master"] = json!("true");
    }
    let ready = n.ready && now.saturating_sub(n.last_heartbeat_ms) <= grace_ms;
    let hb = rfc3339(n.last_heartbeat_ms.max(n.created_ms));
    let cond = |t: &str, ok: bool, reason: &str, msg: &str| json!({"type": t, "status": if ok {"True"} else {"False"}, "lastHeartbeatTime": hb, "lastTransitionTime": rfc3339(n.created_ms), "reason": reason, "message": msg});
    let mut m = meta(&n.name, None, &n.uid, n.created_ms);
    m["labels"] = labels;
    m["annotations"] = json!({"k3s.io/internal-ip": n.internal_ip, "k3s.io/hostname": n.name, "node.alpha.kubernetes.io/ttl": "0"});
    let mut spec = json!({"podCIDR": format!("10.42.{}.0/24", n.index), "podCIDRs": [format!("10.42.{}.0/24", n.index)], "providerID": format!("k3s://{}", n.name)});
    if n.unschedulable {
        spec["unschedulable"] = json!(true);
        spec["taints"] = json!([{"effect": "NoSchedule", "key": "node.kubernetes.io/unschedulable", "timeAdded": rfc3339(n.unschedulable_since_ms)}]);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": m,
        "spec": spec,
        "status": {
            "addresses": [{"type": "InternalIP", "address": n.internal_ip}, {"type": "Hostname", "address": n.name}],
            "conditions": [
                cond("MemoryPressure", false, "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                cond("DiskPressure", false, "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                cond("PIDPressure", false, "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                if ready { cond("Ready", true, "KubeletReady", "kubelet is posting ready status") }
                else { json!({"type": "Ready", "status": "Unknown", "lastHeartbeatTime": hb, "lastTransitionTime": hb, "reason": "NodeStatusUnknown", "message": "Kubelet stopped posting node status."}) },
            ],
            "nodeInfo": {
                "architecture": n.arch, "bootID": n.uid, "containerRuntimeVersion": n.container_runtime,
                "kernelVersion": n.kernel, "kubeProxyVersion": n.kubelet_version, "kubeletVersion": n.kubelet_version,
                "machineID": crate::util::sha256_hex(n.name.as_bytes())[..32].to_string(), "operatingSystem": "linux",
                "osImage": n.os_image, "systemUUID": n.uid,
            },
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        }
    })
}

pub fn node_ready(n: &Node, now: u64, grace_ms: u64) -> bool {
    n.ready && now.saturating_sub(n.last_heartbeat_ms) <= grace_ms
}

fn cstate_json(s: &CState) -> Value {
    match s {
        CState::Waiting { reason, message } => {
            let mut w = json!({"reason": reason});
            if let Some(m) = message {
                w["message"] = json!(m);
            }
            json!({"waiting": w})
        }
        CState::Running { started_ms } => json!({"running": {"startedAt": rfc3339(*started_ms)}}),
        CState::Terminated { reason, exit_code, started_ms, finished_ms } => json!({"terminated": {
            "reason": reason, "exitCode": exit_code, "startedAt": rfc3339(*started_ms), "finishedAt": rfc3339(*finished_ms),
            "containerID": format!("containerd://{}", crate::util::sha256_hex(format!("{started_ms}").as_bytes())),
        }}),
    }
}

pub fn pod_json(p: &Pod) -> Value {
    let mut m = meta(&p.name, Some(&p.namespace), &p.uid, p.created_ms);
    m["labels"] = json!(p.labels);
    if p.name.contains('-') && p.owner_kind != "Pod" {
        m["generateName"] = json!(format!("{}-", p.name.rsplit_once('-').map(|x| x.0).unwrap_or(&p.name)));
    }
    if p.owner_kind != "Pod" {
        let api = match p.owner_kind.as_str() {
            "Job" => "batch/v1",
            _ => "apps/v1",
        };
        m["ownerReferences"] = json!([{"apiVersion": api, "kind": p.owner_kind, "name": p.owner_name, "uid": crate::util::sha256_hex(p.workload.as_bytes())[..36].to_string(), "controller": true, "blockOwnerDeletion": true}]);
    }
    let spec_c = |list: &Vec<(String, String)>| -> Vec<Value> { list.iter().map(|(n, i)| json!({"name": n, "image": i, "imagePullPolicy": p.pull_policy_of(n, i), "resources": {}, "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"})).collect() };
    let containers = spec_c(&p.containers);
    let init_spec = spec_c(&p.init_containers);
    let phase = p.phase();
    let scheduled = rfc3339(p.created_ms);
    let tr = |ms: Option<u64>| rfc3339(ms.unwrap_or(p.created_ms));
    let all_ready = p.ready();
    let unready: Vec<&str> = p.status.containers.iter().filter(|c| !c.ready).map(|c| c.name.as_str()).collect();
    let unready_list = format!("containers with unready status: [{}]", unready.join(" "));
    let ready_cond = |t: &str| {
        if phase == "Succeeded" {
            json!({"type": t, "status": "False", "lastProbeTime": null, "lastTransitionTime": tr(p.status.ready_since_ms), "reason": "PodCompleted"})
        } else if all_ready {
            json!({"type": t, "status": "True", "lastProbeTime": null, "lastTransitionTime": tr(p.status.ready_since_ms)})
        } else {
            json!({"type": t, "status": "False", "lastProbeTime": null, "lastTransitionTime": scheduled, "reason": "ContainersNotReady", "message": unready_list})
        }
    };
    let init_incomplete: Vec<&str> = p
        .init_containers
        .iter()
        .filter(|(n, _)| !p.status.init_containers.iter().any(|c| &c.name == n && matches!(c.state, CState::Terminated { exit_code: 0, .. })))
        .map(|(n, _)| n.as_str())
        .collect();
    let initialized = if init_incomplete.is_empty() {
        json!({"type": "Initialized", "status": "True", "lastProbeTime": null, "lastTransitionTime": scheduled})
    } else {
        json!({"type": "Initialized", "status": "False", "lastProbeTime": null, "lastTransitionTime": scheduled, "reason": "ContainersNotInitialized", "message": format!("containers with incomplete status: [{}]", init_incomplete.join(" "))})
    };
    let mut conditions = vec![
        json!({"type": "PodReadyToStartContainers", "status": if p.status.sandbox_ready && phase != "Succeeded" {"True"} else {"False"}, "lastProbeTime": null, "lastTransitionTime": tr(p.status.start_ms)}),
        initialized,
        ready_cond("Ready"),
        ready_cond("ContainersReady"),
        if p.node.is_empty() {
            json!({"type": "PodScheduled", "status": "False", "lastProbeTime": null, "lastTransitionTime": scheduled, "reason": "Unschedulable", "message": "0/0 nodes are available"})
        } else {
            json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": scheduled})
        },
    ];
    if p.node.is_empty() {
        conditions = vec![conditions.pop().unwrap_or(Value::Null)];
    }
    if p.status.start_ms.is_none() && !p.status.sandbox_ready {
        conditions[0]["status"] = json!("False");
    }
    let status_list = |spec: &Vec<(String, String)>, have: &Vec<ContainerStatus>, default_reason: &str| -> Vec<Value> {
        spec.iter()
            .map(|(name, image)| match have.iter().find(|c| &c.name == name) {
                Some(c) => {
                    let mut v = json!({"name": c.name, "image": c.image, "imageID": c.image_id, "ready": c.ready, "restartCount": c.restart_count, "started": matches!(c.state, CState::Running{..}), "state": cstate_json(&c.state), "lastState": {}});
                    if let CState::Running { started_ms } | CState::Terminated { started_ms, .. } = c.state {
                        v["containerID"] = json!(format!("containerd://{}", crate::util::sha256_hex(format!("{}{}{started_ms}", p.uid, c.name).as_bytes())));
                    }
                    v
                }
                None => json!({"name": name, "image": image, "imageID": "", "ready": false, "restartCount": 0, "started": false, "state": {"waiting": {"reason": default_reason}}, "lastState": {}}),
            })
            .collect()
    };
    let statuses = status_list(&p.containers, &p.status.containers, "ContainerCreating");
    let init_statuses = status_list(&p.init_containers, &p.status.init_containers, "PodInitializing");
    let mut status = json!({
        "phase": phase,
        "conditions": conditions,
        "hostIP": "",
        "hostIPs": [],
        "qosClass": "BestEffort",
        "containerStatuses": statuses,
    });
    if !p.init_containers.is_empty() {
        status["initContainerStatuses"] = json!(init_statuses);
    }
    if let Some(s) = p.status.start_ms {
        status["startTime"] = json!(rfc3339(s));
    } else {
        status["startTime"] = json!(scheduled);
    }
    if p.status.sandbox_ready {
        status["podIP"] = json!(p.ip);
        status["podIPs"] = json!([{"ip": p.ip}]);
    }
    let mut v = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": m,
        "spec": {"containers": containers, "nodeName": p.node, "restartPolicy": p.restart_policy, "schedulerName": "default-scheduler", "dnsPolicy": "ClusterFirst", "serviceAccountName": "default", "terminationGracePeriodSeconds": 30, "enableServiceLinks": true, "preemptionPolicy": "PreemptLowerPriority", "priority": 0},
        "status": status,
    });
    if !init_spec.is_empty() {
        v["spec"]["initContainers"] = json!(init_spec);
    }
    if p.node.is_empty() {
        if let Some(s) = v["spec"].as_object_mut() {
            s.remove("nodeName");
        }
        if let Some(s) = v["status"].as_object_mut() {
            s.remove("containerStatuses");
            s.remove("startTime");
        }
    }
    if let Some(d) = p.deleting_ms {
        v["metadata"]["deletionTimestamp"] = json!(rfc3339(d));
        v["metadata"]["deletionGracePeriodSeconds"] = json!(30);
    }
    if p.empty_dir {
        v["spec"]["volumes"] = json!([{"name": "data", "emptyDir": {}}]);
    }
    v
}

pub fn pod_json_with_host(p: &Pod, st: &State) -> Value {
    let mut v = pod_json(p);
    if let Some(n) = st.nodes.get(&p.node) {
        v["status"]["hostIP"] = json!(n.internal_ip);
        v["status"]["hostIPs"] = json!([{"ip": n.internal_ip}]);
    }
    v
}

pub fn event_json(e: &Event) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": meta(&e.name, Some(&e.namespace), &e.uid, e.first_ms),
        "involvedObject": {"apiVersion": "v1", "kind": e.object_kind, "name": e.object_name, "namespace": e.namespace, "uid": e.object_uid},
        "reason": e.reason,
        "message": e.message,
        "type": e.type_,
        "count": e.count,
        "firstTimestamp": rfc3339(e.first_ms),
        "lastTimestamp": rfc3339(e.last_ms),
        "eventTime": null,
        "reportingComponent": e.component,
        "reportingInstance": e.host,
        "source": if e.host.is_empty() { json!({"component": e.component}) } else { json!({"component": e.component, "host": e.host}) },
    })
}

pub fn secret_json(s: &Secret) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": meta(&s.name, Some(&s.namespace), &s.uid, s.created_ms), "type": s.type_, "data": s.data})
}

pub fn list_json(items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}})
}
