//! `k3s agent`: joins the server named by K3S_URL/--server (https only) with K3S_TOKEN /
//! K3S_TOKEN_FILE, pinning the server CA by the token's hash, registers under the node-password
//! rule (retrying and logging the rejection like k3s), then runs this node's kubelet, pulling
//! with its own registries.yaml. Owns nothing on the server; writes only this node's files.
use crate::api;
use crate::kubelet::{Kubelet, PodAssignment};
use crate::server::{self, SyncRequest, parse_token};
use crate::util::{log, now_ms};
use std::time::Duration;

/// Validate the server URL the way k3s does: it must be https.
pub fn check_server_url(url: &str) -> Result<String, String> {
    let u = url.trim();
    if u.is_empty() {
        return Err("--server is required (K3S_URL)".into());
    }
    if !u.starts_with("https://") {
        return Err(format!("server url must use https:// scheme, got {u:?} (K3S_URL/--server)"));
    }
    let hostport = u["https://".len()..].split('/').next().unwrap_or("");
    let host = hostport.rsplit_once(':').map(|(h, _)| h).unwrap_or(hostport);
    let ok = match host.parse::<std::net::Ipv4Addr>() {
        Ok(a) => a.is_loopback(),
        Err(_) => {
            use std::net::ToSocketAddrs;
            (host, 0u16).to_socket_addrs().map(|mut it| it.all(|a| a.ip().is_loopback())).unwrap_or(false)
        }
    };
    if !ok {
        return Err(format!("server {host} is not on loopback: the board lab only uses 127.0.0.0/8"));
    }
    let base = if hostport.contains(':') { format!("https://{hostport}") } else { format!("https://{hostport}:6443") };
    Ok(base)
}

pub fn run(args: &[String]) -> i32 {
    let c = match server::common(args) {
        Ok(c) => c,
        Err(e) => {
            log("fatal", &e);
            return 1;
        }
    };
    let base = match check_server_url(&c.cfg.get("server").unwrap_or_default()) {
        Ok(b) => b,
        Err(e) => {
            log("fatal", &format!("Error: {e}"));
            return 1;
        }
    };
    let from_file = match c.cfg.get("token-file") {
        Some(f) => match std::fs::read_to_string(c.paths.user_path(&f)) {
            Ok(t) => Some(t),
            Err(e) => {
                log("fatal", &format!("Error: failed to read token file {f}: {e}"));
                return 1;
            }
        },
        None => None,
    };
    let token = match c.cfg.get("token").or(from_file) {
        Some(t) if !t.trim().is_empty() => t,
        _ => {
            log("fatal", "Error: --token is required (K3S_TOKEN or K3S_TOKEN_FILE)");
            return 1;
        }
    };
    let (ca_hash, password) = parse_token(&token);
    log("info", &format!("Starting k3s agent {} ({})", c.version, &crate::util::sha256_hex(c.version.as_bytes())[..8]));
    let puller = match server::puller(&c) {
        Ok(p) => p,
        Err(e) => {
            log("fatal", &e);
            return 1;
        }
    };
    let retry = Duration::from_millis((c.sim.sync_ms * 5).min(5000));
    use base64::Engine;
    let authz = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("node:{password}")));
    // join: CA, then registration (node password)
    let client = loop {
        let ca = match api::fetch_cacerts(&base) {
            Ok(ca) => ca,
            Err(e) => {
                log("info", &format!("Waiting to retrieve agent configuration; server is not ready: {e}"));
                std::thread::sleep(retry);
                continue;
            }
        };
        if let Some(h) = &ca_hash
            && &api::ca_hash(&ca) != h {
                log("error", &format!("token CA hash does not match the Cluster CA certificate hash: {} != {h}", api::ca_hash(&ca)));
                std::thread::sleep(retry);
                continue;
            }
        let client = match api::Client::new(&base, ca.as_bytes(), authz.clone()) {
            Ok(cl) => cl,
            Err(e) => {
                log("error", &format!("failed to set up client: {e}"));
                std::thread::sleep(retry);
                continue;
            }
        };
        // Version skew policy: a kubelet must not be newer than kube-apiserver. The simulator's
        // agent refuses to join a server of an older minor version (its own choice, see
        // docs/k3s-day2.md) and keeps retrying, so the node never registers.
        match client.call("GET", "/version", None) {
            Ok((200, body)) => {
                let server_v = serde_json::from_slice::<serde_json::Value>(&body).ok().and_then(|v| v["gitVersion"].as_str().map(str::to_string)).unwrap_or_default();
                if let Some(e) = skew_error(&c.version, &server_v) {
                    log("error", &e);
                    std::thread::sleep(retry);
                    continue;
                }
            }
            Ok((st, _)) => {
                log("info", &format!("Waiting to retrieve agent configuration; server is not ready: /version: {st}"));
                std::thread::sleep(retry);
                continue;
            }
            Err(e) => {
                log("info", &format!("Waiting to retrieve agent configuration; server is not ready: {e}"));
                std::thread::sleep(retry);
                continue;
            }
        }
        match client.call("POST", "/v1-k3s/rvlab/register", Some(&serde_json::to_value(&c.node).unwrap_or_default())) {
            Ok((200, _)) => break client,
            Ok((401, _)) => log("info", "Waiting to retrieve agent configuration; server is not ready: failed to get CA certs: 401 Unauthorized (token)"),
            Ok((_, body)) => log("info", &format!("Waiting to retrieve agent configuration; server is not ready: {}", String::from_utf8_lossy(&body).trim())),
            Err(e) => log("info", &format!("Waiting to retrieve agent configuration; server is not ready: {e}")),
        }
        std::thread::sleep(retry);
    };
    log("info", &format!("Node {} joined {base}", c.node.name));
    server::sd_notify_ready();
    let mut kubelet = Kubelet::new(&c.node.name, puller, &server::pause_image(&c), &c.sim, &c.paths);
    let mut pods: Vec<PodAssignment> = Vec::new();
    let mut pending = SyncRequest { node: c.node.clone(), reports: vec![], events: vec![] };
    loop {
        match client.call("POST", "/v1-k3s/rvlab/sync", Some(&serde_json::to_value(&pending).unwrap_or_default())) {
            Ok((200, body)) => {
                pods = serde_json::from_slice(&body).unwrap_or_default();
                kubelet.gc_sandboxes(&pods);
                pending.reports.clear();
                pending.events.clear();
            }
            Ok((st, body)) => log("error", &format!("status update failed: {st} {}", String::from_utf8_lossy(&body).trim())),
            Err(e) => log("error", &format!("status update failed: {e}")),
        }
        let (reports, events) = kubelet.sync(&pods, now_ms());
        pending.reports = reports;
        pending.events.extend(events);
        if pending.events.len() > 500 {
            pending.events.drain(..250);
        }
        // next round carries the reports; keep local view so the next sync starts from it
        for r in &pending.reports {
            if let Some(p) = pods.iter_mut().find(|p| p.uid == r.uid) {
                p.prev = r.status.clone();
            }
        }
        std::thread::sleep(Duration::from_millis(c.sim.sync_ms));
    }
}

fn major_minor(v: &str) -> Option<(u32, u32)> {
    let mut it = v.trim_start_matches('v').split(['.', '+', '-']);
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// The error the agent logs when its kubelet would be newer (by minor version) than the server.
pub fn skew_error(agent: &str, server: &str) -> Option<String> {
    let (a, s) = (major_minor(agent)?, major_minor(server)?);
    (a > s).then(|| {
        format!(
            "Failed to join server: kubelet version {agent} is newer than kube-apiserver version {server}; the Kubernetes version skew policy does not allow a kubelet newer than kube-apiserver (upgrade the server first)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn kubelet_newer_than_apiserver_is_refused() {
        assert!(skew_error("v1.34.3+k3s1", "v1.33.4+k3s1").is_some_and(|e| e.contains("newer than kube-apiserver")));
        assert!(skew_error("v1.33.9+k3s1", "v1.33.4+k3s1").is_none(), "patch versions may differ");
        assert!(skew_error("v1.32.1+k3s1", "v1.34.3+k3s1").is_none(), "older kubelets are allowed");
    }
    #[test]
    fn https_only() {
        let e = check_server_url("http://127.0.3.1:6443").unwrap_err();
        assert!(e.contains("https"), "{e}");
        assert_eq!(check_server_url("https://127.0.3.1:6443").unwrap(), "https://127.0.3.1:6443");
        assert_eq!(check_server_url("https://127.0.3.1").unwrap(), "https://127.0.3.1:6443");
        assert!(check_server_url("https://10.1.2.3:6443").is_err());
        assert!(check_server_url("").is_err());
    }
}
