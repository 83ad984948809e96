//! Reading `kubectl ... -o json` output: nodes, pods and events in the Kubernetes API shape
//! (v1 List of Node/Pod, v1 EventList). Pure; unknown fields are ignored, missing ones default.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeStatus {
    pub name: String,
    pub ready: bool,
    /// Reason of the Ready condition when not ready (KubeletNotReady, NodeStatusUnknown...).
    pub reason: Option<String>,
    pub message: Option<String>,
    pub kubelet_version: String,
    pub roles: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerStatus {
    pub name: String,
    pub image: String,
    pub ready: bool,
    pub restart_count: u64,
    pub running: bool,
    pub waiting_reason: Option<String>,
    pub waiting_message: Option<String>,
    pub terminated_reason: Option<String>,
    pub last_terminated_reason: Option<String>,
    pub last_exit_code: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Condition {
    pub kind: String,
    pub status: String,
    pub reason: Option<String>,
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodStatus {
    pub namespace: String,
    pub name: String,
    pub node: Option<String>,
    pub phase: String,
    pub conditions: Vec<Condition>,
    pub containers: Vec<ContainerStatus>,
    /// Images named in the spec (the status may not list containers that never got created).
    pub spec_images: Vec<(String, String)>,
    /// Owner kind (Job pods that Succeeded are done, not failing).
    pub owner_kind: Option<String>,
}

impl PodStatus {
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
    pub fn condition(&self, kind: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.kind == kind)
    }
    /// Ready (condition Ready=True) or finished successfully.
    pub fn ok(&self) -> bool {
        self.phase == "Succeeded" || self.condition("Ready").is_some_and(|c| c.status == "True")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub namespace: String,
    /// `Pod`, `Node`...
    pub kind: String,
    pub name: String,
    pub reason: String,
    pub message: String,
    pub kind_of_event: String,
    pub count: u64,
}

fn s(v: &Value, path: &[&str]) -> Option<String> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str().map(str::to_string)
}

fn parse_conditions(v: &Value) -> Vec<Condition> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|c| Condition {
                    kind: s(c, &["type"]).unwrap_or_default(),
                    status: s(c, &["status"]).unwrap_or_default(),
                    reason: s(c, &["reason"]),
                    message: s(c, &["message"]),
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn parse_node(v: &Value) -> NodeStatus {
    let conds = parse_conditions(&v["status"]["conditions"]);
    let ready = conds.iter().find(|c| c.kind == "Ready");
    let mut roles: Vec<String> = v["metadata"]["labels"]
        .as_object()
        .map(|m| m.keys().filter_map(|k| k.strip_prefix("node-role.kubernetes.io/").map(str::to_string)).collect())
        .unwrap_or_default();
    roles.sort();
    NodeStatus {
        name: s(v, &["metadata", "name"]).unwrap_or_default(),
        ready: ready.is_some_and(|c| c.status == "True"),
        reason: ready.filter(|c| c.status != "True").and_then(|c| c.reason.clone()).or_else(|| {
            if ready.is_none() { Some("NoReadyCondition".into()) } else { None }
        }),
        message: ready.filter(|c| c.status != "True").and_then(|c| c.message.clone()),
        kubelet_version: s(v, &["status", "nodeInfo", "kubeletVersion"]).unwrap_or_default(),
        roles,
    }
}

fn parse_container(c: &Value) -> ContainerStatus {
    let state = &c["state"];
    ContainerStatus {
        name: s(c, &["name"]).unwrap_or_default(),
        image: s(c, &["image"]).unwrap_or_default(),
        ready: c["ready"].as_bool().unwrap_or(false),
        restart_count: c["restartCount"].as_u64().unwrap_or(0),
        running: state.get("running").is_some(),
        waiting_reason: s(state, &["waiting", "reason"]),
        waiting_message: s(state, &["waiting", "message"]),
        terminated_reason: s(state, &["terminated", "reason"]),
        last_terminated_reason: s(c, &["lastState", "terminated", "reason"]),
        last_exit_code: c["lastState"]["terminated"]["exitCode"].as_i64(),
    }
}

pub fn parse_pod(v: &Value) -> PodStatus {
    let mut containers: Vec<ContainerStatus> = Vec::new();
    for key in ["initContainerStatuses", "containerStatuses"] {
        if let Some(a) = v["status"][key].as_array() {
            containers.extend(a.iter().map(parse_container));
        }
    }
    let mut spec_images = Vec::new();
    for key in ["initContainers", "containers"] {
        if let Some(a) = v["spec"][key].as_array() {
            spec_images.extend(a.iter().map(|c| (s(c, &["name"]).unwrap_or_default(), s(c, &["image"]).unwrap_or_default())));
        }
    }
    PodStatus {
        namespace: s(v, &["metadata", "namespace"]).unwrap_or_else(|| "default".into()),
        name: s(v, &["metadata", "name"]).unwrap_or_default(),
        node: s(v, &["spec", "nodeName"]),
        phase: s(v, &["status", "phase"]).unwrap_or_else(|| "Unknown".into()),
        conditions: parse_conditions(&v["status"]["conditions"]),
        containers,
        spec_images,
        owner_kind: s(&v["metadata"]["ownerReferences"][0], &["kind"]),
    }
}

/// Why kubectl's JSON could not be read.
#[derive(Debug, thiserror::Error)]
pub enum KubeParseError {
    #[error("kubectl output is not JSON: {0}")]
    NotJson(serde_json::Error),
    #[error("kubectl output has no `items`")]
    NoItems,
    #[error("kubectl events output is not JSON: {0}")]
    EventsNotJson(serde_json::Error),
    #[error("kubectl events output has no `items`")]
    EventsNoItems,
}

/// `kubectl get nodes,pods -A -o json` (a List mixing kinds), or a NodeList / PodList.
pub fn parse_list(json: &str) -> Result<(Vec<NodeStatus>, Vec<PodStatus>), KubeParseError> {
    let v: Value = serde_json::from_str(json).map_err(KubeParseError::NotJson)?;
    let items = v["items"].as_array().ok_or(KubeParseError::NoItems)?;
    let (mut nodes, mut pods) = (Vec::new(), Vec::new());
    let list_kind = s(&v, &["kind"]).unwrap_or_default();
    for it in items {
        let kind = s(it, &["kind"]).unwrap_or_else(|| list_kind.trim_end_matches("List").to_string());
        match kind.as_str() {
            "Node" => nodes.push(parse_node(it)),
            "Pod" => pods.push(parse_pod(it)),
            _ => {}
        }
    }
    Ok((nodes, pods))
}

/// `kubectl get events -A -o json`.
pub fn parse_events(json: &str) -> Result<Vec<Event>, KubeParseError> {
    let v: Value = serde_json::from_str(json).map_err(KubeParseError::EventsNotJson)?;
    let items = v["items"].as_array().ok_or(KubeParseError::EventsNoItems)?;
    Ok(items
        .iter()
        .map(|e| Event {
            namespace: s(e, &["involvedObject", "namespace"])
                .or_else(|| s(e, &["metadata", "namespace"]))
                .unwrap_or_default(),
            kind: s(e, &["involvedObject", "kind"]).unwrap_or_default(),
            name: s(e, &["involvedObject", "name"]).unwrap_or_default(),
            reason: s(e, &["reason"]).unwrap_or_default(),
            message: s(e, &["message"]).unwrap_or_default(),
            kind_of_event: s(e, &["type"]).unwrap_or_default(),
            count: e["count"].as_u64().unwrap_or(1),
        })
        .collect())
}
