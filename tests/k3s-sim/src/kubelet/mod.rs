//! The node agent's pod runtime (kubelet + containerd, simulated): for each pod assigned to
//! this node, get the sandbox (pause) image, pull each container image with this node's
//! registries.yaml (read once at start), start containers, mark them Ready after the configured
//! delay, complete Job containers, with kubelet's reasons, messages, events and back-off.
//! Owns this node's image store file; never edits cluster state directly (it reports).
use crate::cluster::{CState, ContainerStatus, EventReport, PodStatus};
use crate::image::ImageRef;
use crate::paths::Paths;
use crate::pull::{PullError, Pulled, Puller};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodAssignment {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub containers: Vec<(String, String)>,
    #[serde(default)]
    pub init_containers: Vec<(String, String)>,
    /// containers whose imagePullPolicy is Always (pulled even when present) / Never
    #[serde(default)]
    pub pull_always: Vec<String>,
    #[serde(default)]
    pub pull_never: Vec<String>,
    pub is_job: bool,
    pub prev: PodStatus,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodReport {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub status: PodStatus,
}

struct Backoff {
    next_ms: u64,
    delay_ms: u64,
    err: PullError,
}

pub struct Kubelet {
    pub node: String,
    pub puller: Puller,
    pub pause_image: String,
    pub ready_delay_ms: u64,
    pub backoff_ms: u64,
    pub paths: Paths,
    store: BTreeMap<String, Pulled>,
    backoff: HashMap<String, Backoff>,
    imported: std::collections::BTreeSet<String>,
    /// the k3s version (names the data dir the shims start from)
    pub version: String,
    /// pod uids whose sandbox (shim, mounts, veth) this process has started or adopted
    sandboxes: std::collections::BTreeSet<String>,
}

/// Read a node's image store file.
pub fn load_store(paths: &Paths) -> BTreeMap<String, Pulled> {
    std::fs::read(paths.image_store()).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

/// Add images to a node's image store file (for `crictl pull`, `ctr images tag`).
pub fn add_to_store(paths: &Paths, items: Vec<Pulled>) -> std::io::Result<()> {
    let mut store = load_store(paths);
    for p in items {
        store.insert(p.image.clone(), p);
    }
    crate::util::write_file(&paths.image_store(), &serde_json::to_vec_pretty(&store).unwrap_or_default(), 0o644)
}

impl Kubelet {
    pub fn new(node: &str, puller: Puller, pause_image: &str, sim: &crate::simconf::SimConf, paths: &Paths) -> Kubelet {
        let store = load_store(paths);
        crate::leftovers::network_up(paths);
        Kubelet {
            node: node.to_string(),
            puller,
            pause_image: pause_image.to_string(),
            ready_delay_ms: sim.ready_delay_ms,
            backoff_ms: sim.backoff_ms,
            paths: paths.clone(),
            store,
            backoff: HashMap::new(),
            imported: Default::default(),
            version: crate::release::effective_version(sim),
            sandboxes: Default::default(),
        }
    }

    /// Merge images others added to the store file (crictl pull) and import new tarballs from
    /// /var/lib/rancher/k3s/agent/images.
    fn refresh(&mut self) {
        for (k, v) in load_store(&self.paths) {
            self.store.entry(k).or_insert(v);
        }
        let dir = self.paths.agent_images();
        let mut changed = false;
        for (file, fp) in crate::airgap::scan(&dir) {
            if !self.imported.insert(fp) {
                continue;
            }
            if !crate::airgap::KNOWN.iter().any(|e| file.ends_with(e)) {
                continue;
            }
            if !crate::airgap::SUPPORTED.iter().any(|e| file.ends_with(e)) {
                crate::util::log("error", &format!("Unable to import {file}: this compression is not supported by the rvlab k3s simulator (use .tar or .tar.gz)"));
                continue;
            }
            let Ok(data) = std::fs::read(dir.join(&file)) else { continue };
            let shown = format!("/var/lib/rancher/k3s/agent/images/{file}");
            for (name, res) in crate::airgap::import_archive(&shown, &data, &self.puller.arch) {
                match res {
                    Ok(p) => {
                        crate::util::log("info", &format!("Imported {name} from {shown}"));
                        self.backoff.remove(&name);
                        self.store.insert(name, p);
                        changed = true;
                    }
                    Err(e) => crate::util::log("error", &format!("Failed to import {name} from {shown}: {e}")),
                }
            }
        }
        if changed {
            self.save_store();
        }
    }

    /// Images this node has (like `crictl images`).
    pub fn images(&self) -> &BTreeMap<String, Pulled> {
        &self.store
    }

    fn save_store(&self) {
        if let Ok(b) = serde_json::to_vec_pretty(&self.store) {
            let _ = crate::util::write_file(&self.paths.image_store(), &b, 0o644);
        }
    }

    fn ev(&self, a: &PodAssignment, reason: &str, message: String, warning: bool) -> EventReport {
        EventReport {
            namespace: a.namespace.clone(),
            pod: a.name.clone(),
            pod_uid: a.uid.clone(),
            reason: reason.into(),
            message,
            warning,
            component: "kubelet".into(),
            host: self.node.clone(),
        }
    }

    /// Ensure an image is present. Ok(true) if it was pulled now, Ok(false) if already present.
    /// Err((in_backoff, error)).
    fn ensure(&mut self, image: &str, now: u64, tried: &mut HashMap<String, Result<(), PullError>>, always: bool) -> Result<bool, (bool, PullError)> {
        let r = ImageRef::parse(image).map_err(|e| (false, PullError { message: e, code: "InvalidArgument" }))?;
        let full = r.to_string();
        if self.store.contains_key(&full) && !always {
            return Ok(false);
        }
        if let Some(prev) = tried.get(&full) {
            return match prev {
                Ok(()) => Ok(false),
                Err(e) => Err((false, e.clone())),
            };
        }
        if let Some(b) = self.backoff.get(&full)
            && now < b.next_ms {
                return Err((true, b.err.clone()));
            }
        match self.puller.pull(&r) {
            Ok(p) => {
                self.backoff.remove(&full);
                crate::util::log("info", &format!("Pulled image {full} from {} ({})", p.endpoint, p.manifest_digest));
                self.store.insert(full.clone(), p);
                self.save_store();
                tried.insert(full, Ok(()));
                Ok(true)
            }
            Err(e) => {
                let delay = self.backoff.get(&full).map(|b| (b.delay_ms * 2).min(300_000)).unwrap_or(self.backoff_ms);
                self.backoff.insert(full.clone(), Backoff { next_ms: now + delay, delay_ms: delay, err: e.clone() });
                crate::util::log("error", &format!("PullImage {full:?} failed: {}", e.rpc()));
                tried.insert(full, Err(e.clone()));
                Err((false, e))
            }
        }
    }

    /// Stop the sandboxes of pods no longer assigned to this node (evicted, deleted). Call it
    /// only with a list the API server just returned (never while it is unreachable).
    pub fn gc_sandboxes(&mut self, pods: &[PodAssignment]) {
        for (id, uid) in crate::leftovers::sandboxes(&self.paths) {
            if !pods.iter().any(|p| p.uid == uid) {
                crate::leftovers::stop_sandbox(&self.paths, &id, &uid);
                self.sandboxes.remove(&uid);
            }
        }
    }

    /// One sync over the node's pods: returns their statuses and the events to record.
    pub fn sync(&mut self, pods: &[PodAssignment], now: u64) -> (Vec<PodReport>, Vec<EventReport>) {
        self.refresh();
        let mut reports = Vec::new();
        let mut events = Vec::new();
        let mut tried = HashMap::new();
        for a in pods {
            let mut st = a.prev.clone();
            // sandbox
            if !st.sandbox_ready {
                match self.ensure(&self.pause_image.clone(), now, &mut tried, false) {
                    Ok(_) => {
                        st.sandbox_ready = true;
                        st.start_ms.get_or_insert(now);
                    }
                    Err((_, e)) => {
                        let pause = ImageRef::parse(&self.pause_image).map(|r| r.to_string()).unwrap_or(self.pause_image.clone());
                        events.push(self.ev(
                            a,
                            "FailedCreatePodSandBox",
                            format!("Failed to create pod sandbox: rpc error: code = Unknown desc = failed to get sandbox image \"{pause}\": failed to pull image \"{pause}\": {}", e.message),
                            true,
                        ));
                        let init_reason = "PodInitializing";
                        st.init_containers = a.init_containers.iter().map(|(n, i)| waiting(n, i, init_reason)).collect();
                        let main_reason = if a.init_containers.is_empty() { "ContainerCreating" } else { "PodInitializing" };
                        st.containers = a.containers.iter().map(|(n, i)| waiting(n, i, main_reason)).collect();
                        reports.push(PodReport { namespace: a.namespace.clone(), name: a.name.clone(), uid: a.uid.clone(), status: st });
                        continue;
                    }
                }
            }
            if st.sandbox_ready && self.sandboxes.insert(a.uid.clone()) {
                crate::leftovers::start_sandbox(&self.paths, &self.version, &a.uid);
            }
            // init containers one after the other, each to completion; then the containers
            let mut init_out = Vec::new();
            let mut init_done = true;
            for (cname, image) in &a.init_containers {
                if !init_done {
                    init_out.push(waiting(cname, image, "PodInitializing"));
                    continue;
                }
                let prev = st.init_containers.iter().find(|c| &c.name == cname).cloned();
                let cs = self.step(a, cname, image, prev, true, now, &mut tried, &mut events);
                if !matches!(cs.state, CState::Terminated { exit_code: 0, .. }) {
                    init_done = false;
                }
                init_out.push(cs);
            }
            st.init_containers = init_out;
            let mut out = Vec::new();
            for (cname, image) in &a.containers {
                if !init_done {
                    out.push(waiting(cname, image, "PodInitializing"));
                    continue;
                }
                let prev = st.containers.iter().find(|c| &c.name == cname).cloned();
                out.push(self.step(a, cname, image, prev, a.is_job, now, &mut tried, &mut events));
            }
            st.containers = out;
            let ready = !st.containers.is_empty() && st.containers.iter().all(|c| c.ready);
            if ready && st.ready_since_ms.is_none() {
                st.ready_since_ms = Some(now);
            } else if !ready && !a.is_job {
                st.ready_since_ms = None;
            }
            if a.is_job && st.containers.iter().all(|c| matches!(c.state, CState::Terminated { .. })) {
                st.ready_since_ms.get_or_insert(now);
            }
            reports.push(PodReport { namespace: a.namespace.clone(), name: a.name.clone(), uid: a.uid.clone(), status: st });
        }
        (reports, events)
    }

    /// Advance one container: pull its image (with back-off), start it, make it Ready after the
    /// delay, or complete it when it runs to completion (Job and init containers).
    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        a: &PodAssignment,
        cname: &str,
        image: &str,
        prev: Option<ContainerStatus>,
        runs_to_completion: bool,
        now: u64,
        tried: &mut HashMap<String, Result<(), PullError>>,
        events: &mut Vec<EventReport>,
    ) -> ContainerStatus {
        let mut cs = prev.unwrap_or_else(|| waiting(cname, image, "ContainerCreating"));
        match cs.state.clone() {
            CState::Running { started_ms } => {
                if runs_to_completion && now >= started_ms + self.ready_delay_ms {
                    cs.state = CState::Terminated { reason: "Completed".into(), exit_code: 0, started_ms, finished_ms: now };
                    cs.ready = false;
                } else {
                    cs.ready = !runs_to_completion && now >= started_ms + self.ready_delay_ms;
                }
            }
            CState::Terminated { .. } => {}
            CState::Waiting { .. } => {
                let full = ImageRef::parse(image).map(|r| r.to_string()).unwrap_or(image.to_string());
                let was_present = self.store.contains_key(&full);
                let always = a.pull_always.iter().any(|c| c == cname);
                if a.pull_never.iter().any(|c| c == cname) && !was_present {
                    events.push(self.ev(a, "ErrImageNeverPull", format!("Container image \"{image}\" is not present with pull policy of Never"), true));
                    cs.state = CState::Waiting {
                        reason: "ErrImageNeverPull".into(),
                        message: Some(format!("Container image \"{image}\" is not present with pull policy of Never")),
                    };
                    return cs;
                }
                if (!was_present || always) && !matches!(self.backoff.get(&full), Some(b) if now < b.next_ms) && !tried.contains_key(&full) {
                    events.push(self.ev(a, "Pulling", format!("Pulling image \"{image}\""), false));
                }
                match self.ensure(image, now, tried, always && !a.pull_never.iter().any(|c| c == cname)) {
                    Ok(pulled_now) => {
                        let p = self.store.get(&full).cloned();
                        if pulled_now {
                            let size = p.as_ref().map(|p| p.size).unwrap_or(0);
                            events.push(self.ev(a, "Pulled", format!("Successfully pulled image \"{image}\" in 12ms (12ms including waiting). Image size: {size} bytes."), false));
                        } else {
                            events.push(self.ev(a, "Pulled", format!("Container image \"{image}\" already present on machine"), false));
                        }
                        events.push(self.ev(a, "Created", format!("Created container: {cname}"), false));
                        events.push(self.ev(a, "Started", format!("Started container {cname}"), false));
                        cs.image = full.clone();
                        cs.image_id = p.map(|p| p.image_id).unwrap_or_default();
                        cs.state = CState::Running { started_ms: now };
                        cs.ready = false;
                    }
                    Err((true, e)) => {
                        events.push(self.ev(a, "BackOff", format!("Back-off pulling image \"{image}\""), false));
                        events.push(self.ev(a, "Failed", "Error: ImagePullBackOff".into(), true));
                        cs.state = CState::Waiting {
                            reason: "ImagePullBackOff".into(),
                            message: Some(format!("Back-off pulling image \"{image}\": ErrImagePull: {}", e.rpc())),
                        };
                    }
                    Err((false, e)) => {
                        events.push(self.ev(a, "Failed", format!("Failed to pull image \"{image}\": {}", e.rpc()), true));
                        events.push(self.ev(a, "Failed", "Error: ErrImagePull".into(), true));
                        cs.state = CState::Waiting { reason: "ErrImagePull".into(), message: Some(e.rpc()) };
                    }
                }
            }
        }
        cs
    }
}

fn waiting(name: &str, image: &str, reason: &str) -> ContainerStatus {
    ContainerStatus {
        name: name.to_string(),
        image: image.to_string(),
        image_id: String::new(),
        state: CState::Waiting { reason: reason.into(), message: None },
        ready: false,
        restart_count: 0,
    }
}
