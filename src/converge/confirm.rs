//! The health gate (deploy-rs's "magic rollback"): after apply (re)started k3s on a node, confirm
//! over a NEW SSH connection that the board can still be reached, that its unit is active with a
//! new main process, and that the node is Ready (for the server also that the API answers
//! `/readyz`), twice in a row, within `--confirm-timeout`. When it is not, the driver converges
//! the node back to the generation it had before this apply (docs/generations.md §4).

use std::time::{Duration, Instant};

use crate::spec::Role;
use crate::transport::Host;
use crate::transport::cmd::quote;

use super::context::Ctx;
use super::driver::ServerLink;

/// Why one poll of the gate did not find the node healthy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotHealthy {
    #[error("not checked yet")]
    NotChecked,
    #[error("a new SSH connection to the board fails: {0}")]
    Unreachable(String),
    #[error("{0}")]
    Command(String),
    #[error("{unit} is {state}")]
    Unit { unit: String, state: String },
    #[error("{unit} has not restarted yet")]
    NotRestarted { unit: String },
    #[error("the API did not return the node")]
    NoNodeObject,
    /// `kubectl get node` printed an error (its first line) instead of the node.
    #[error("{0}")]
    NoNode(String),
    #[error("node is NotReady ({0})")]
    NotReady(String),
    #[error("node has no Ready condition yet")]
    NoReadyCondition,
    #[error("the API's /readyz says: {0}")]
    ApiNotReady(String),
    #[error("the server is not known")]
    NoServer,
    #[error("the node still reports {got}, not {want}")]
    OldVersion { got: String, want: String },
}

/// What the gate saw last when it gave up.
#[derive(Debug, Clone)]
pub struct Failure {
    pub reason: NotHealthy,
    /// The unit's last log lines on the board.
    pub logs: String,
}

/// Whether a Kubernetes node object (JSON) has condition Ready=True; its kubeletVersion.
pub fn node_ready(json: &str) -> Result<String, NotHealthy> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|_| NotHealthy::NoNodeObject)?;
    let conds = v["status"]["conditions"].as_array().cloned().unwrap_or_default();
    match conds.iter().find(|c| c["type"] == "Ready") {
        Some(c) if c["status"] == "True" => Ok(v["status"]["nodeInfo"]["kubeletVersion"].as_str().unwrap_or("").to_string()),
        Some(c) => Err(NotHealthy::NotReady(c["reason"].as_str().or(c["message"].as_str()).unwrap_or("no reason given").to_string())),
        None => Err(NotHealthy::NoReadyCondition),
    }
}

/// `ActiveState` and `MainPID` out of `systemctl show -p ActiveState,MainPID`.
pub fn unit_state(text: &str) -> (String, u64) {
    let mut state = String::new();
    let mut pid = 0;
    for l in text.lines() {
        if let Some(v) = l.strip_prefix("ActiveState=") {
            state = v.trim().to_string();
        } else if let Some(v) = l.strip_prefix("MainPID=") {
            pid = v.trim().parse().unwrap_or(0);
        }
    }
    (state, pid)
}

/// The node the gate waits for.
pub struct Node<'a> {
    pub name: &'a str,
    pub role: Role,
    /// `k3s.service` or `k3s-agent.service`.
    pub unit: &'a str,
    /// Where k3s lives on it (the server's kubectl).
    pub k3s: &'a str,
    /// The unit's main process before the restart (0: it was not running).
    pub old_pid: u64,
    /// The k3s release the node must report as its kubeletVersion.
    pub version: Option<&'a str>,
}

/// Wait for the node to come back from a (re)start.
pub fn confirm(ctx: &Ctx, n: &Node, server: Option<&ServerLink>, timeout: Duration) -> Result<(), Failure> {
    let Node { name, role, unit, k3s, old_pid, version } = *n;
    let deadline = Instant::now() + timeout;
    let node = ctx.cluster.nodes.iter().find(|n| n.name == name).expect("the gate runs on nodes");
    let mut fresh = None;
    let mut last = NotHealthy::NotChecked;
    let mut good = 0;
    loop {
        if fresh.is_none() {
            match ctx.connect(node) {
                Ok(h) => fresh = Some(h),
                Err(e) => last = NotHealthy::Unreachable(e.to_string()),
            }
        }
        if let Some(h) = fresh.as_mut() {
            match check(h, role, unit, k3s, name, old_pid, server).and_then(|v| match version {
                Some(want) if !v.is_empty() && v != want => Err(NotHealthy::OldVersion { got: v, want: want.to_string() }),
                _ => Ok(()),
            }) {
                Ok(()) => good += 1,
                Err(e) => {
                    good = 0;
                    last = e;
                }
            }
        }
        if good >= 2 {
            return Ok(());
        }
        if Instant::now() >= deadline || super::interrupt::interrupted() {
            let logs = fresh.as_mut().map(|h| last_logs(h, unit)).unwrap_or_default();
            return Err(Failure { reason: last, logs });
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// One poll: what the board says of its unit and, from the server's API, the node (and for the
/// server /readyz). One command on the server; two for an agent (its unit, then the server).
fn check(h: &mut crate::transport::SshHost, role: Role, unit: &str, k3s: &str, name: &str, old_pid: u64, server: Option<&ServerLink>) -> Result<String, NotHealthy> {
    let t = Some(Duration::from_secs(30));
    let show = format!("systemctl show -p ActiveState,MainPID {}", quote(unit));
    let node_q = |k: &str| format!("{} kubectl get node {} -o json 2>&1", quote(k), quote(name));
    let (unit_text, api) = match role {
        Role::Server => {
            let ask = format!("{show}; echo '@@rv readyz'; {k} kubectl get --raw /readyz 2>&1; echo '@@rv node'; {}", node_q(k3s), k = quote(k3s));
            let o = h.exec(&ask, None, t).map_err(|e| NotHealthy::Command(e.to_string()))?;
            let text = o.stdout_str();
            let (u, a) = text.split_once("@@rv readyz").unwrap_or((&text, ""));
            (u.to_string(), Some(a.to_string()))
        }
        Role::Agent => {
            let o = h.exec(&show, None, t).map_err(|e| NotHealthy::Command(e.to_string()))?;
            (o.stdout_str(), None)
        }
    };
    let (state, pid) = unit_state(&unit_text);
    if state != "active" {
        return Err(NotHealthy::Unit { unit: unit.to_string(), state: if state.is_empty() { "unknown".into() } else { state } });
    }
    if pid == 0 || pid == old_pid {
        return Err(NotHealthy::NotRestarted { unit: unit.to_string() });
    }
    match (api, server) {
        (Some(a), _) => api_says(&a),
        // An agent: only its node, as the server's API sees it.
        (None, Some(s)) => {
            let k = s.k3s().ok_or(NotHealthy::NoServer)?;
            node_says(&s.run(&node_q(&k)).map_err(|e| NotHealthy::Command(e.to_string()))?.stdout_str())
        }
        (None, None) => Ok(String::new()),
    }
}

/// What `kubectl get node -o json` printed: Ready and its kubeletVersion, or why not.
fn node_says(node: &str) -> Result<String, NotHealthy> {
    node_ready(node.trim()).map_err(|e| if node.trim().starts_with('{') { e } else { NotHealthy::NoNode(first_line(node, &e.to_string())) })
}

/// The API part of a poll: `/readyz` says ok and the node is Ready; its kubeletVersion.
pub fn api_says(text: &str) -> Result<String, NotHealthy> {
    let text = text.trim_start_matches("@@rv readyz").trim_start_matches('\n');
    let (ready, node) = text.split_once("@@rv node").unwrap_or((text, ""));
    if ready.trim() != "ok" {
        return Err(NotHealthy::ApiNotReady(first_line(ready, "nothing")));
    }
    node_says(node)
}

fn first_line(s: &str, default: &str) -> String {
    s.lines().find(|l| !l.trim().is_empty()).map(|l| l.trim().to_string()).unwrap_or_else(|| default.to_string())
}

/// The unit's last 5 log lines on the board.
pub fn last_logs(h: &mut dyn Host, unit: &str) -> String {
    h.exec(&format!("journalctl -u {} -n 5 -o cat --no-pager 2>/dev/null | tail -n 5", quote(unit)), None, Some(Duration::from_secs(30)))
        .map(|o| o.stdout_str().trim_end().to_string())
        .unwrap_or_default()
}

/// The fragment that prints the unit's main process before a restart (`@@rv value mainpid`,
/// hex of its digits): one `systemctl`, the hex made by the shell (a digit is byte 0x3N), so
/// anything but digits prints an empty value.
pub fn mainpid_fragment(unit: &str) -> String {
    format!(
        "rv_m=$(systemctl show -p MainPID --value {} 2>/dev/null); case $rv_m in ''|*[!0-9]*) rv_m='';; esac; \
         printf '@@rv value mainpid '; while [ -n \"$rv_m\" ]; do rv_r=${{rv_m#?}}; printf '3%s' \"${{rv_m%\"$rv_r\"}}\"; rv_m=$rv_r; done; echo",
        quote(unit)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_and_not_ready_nodes() {
        let ok = r#"{"status":{"conditions":[{"type":"Ready","status":"True"}]}}"#;
        assert!(node_ready(ok).is_ok());
        let no = r#"{"status":{"conditions":[{"type":"Ready","status":"False","reason":"KubeletNotReady"}]}}"#;
        assert_eq!(node_ready(no).unwrap_err().to_string(), "node is NotReady (KubeletNotReady)");
        assert!(node_ready("Error from server (NotFound)").is_err());
        assert_eq!(unit_state("ActiveState=active\nMainPID=42\n"), ("active".to_string(), 42));
        assert!(api_says(&format!("@@rv readyz\nok\n@@rv node\n{ok}\n")).is_ok());
        let down = "@@rv readyz\nThe connection to the server 127.0.0.1:6443 was refused\n@@rv node\nsame\n";
        assert!(api_says(down).unwrap_err().to_string().contains("refused"));
        assert!(matches!(api_says(&format!("@@rv readyz\nok\n@@rv node\n{no}\n")).unwrap_err(), NotHealthy::NotReady(_)));
    }

    #[test]
    fn the_main_pid_fragment_prints_the_digits_in_hex_with_one_process() {
        let dir = tempfile::tempdir().unwrap();
        let calls = dir.path().join("calls");
        let run = |answer: &str| {
            crate::transport::stub::tool(dir.path(), "systemctl", &format!("echo \"$*\" >> '{}'\nprintf '%s\\n' '{answer}'\n", calls.display()));
            let path = crate::transport::stub::path_first(dir.path());
            let out = std::process::Command::new("sh").arg("-c").arg(mainpid_fragment("k3s.service")).env("PATH", path).output().unwrap();
            let r = crate::converge::script::parse(&String::from_utf8_lossy(&out.stdout));
            super::super::driver::mainpid_of(&r.values)
        };
        assert_eq!(run("40917"), 40917);
        assert_eq!(run("0"), 0);
        assert_eq!(run("Failed to get properties"), 0, "not digits: no pid");
        assert_eq!(std::fs::read_to_string(&calls).unwrap(), "show -p MainPID --value k3s.service\n".repeat(3));
    }
}
