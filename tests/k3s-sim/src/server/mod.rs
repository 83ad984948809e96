//! `k3s server`: assembles config, writes token / kubeconfig / packaged manifests, keeps the
//! cluster state (persisted under server/db), serves the API on <node-ip>:6443, runs the
//! controllers and this node's own kubelet, and admits agents under the node-password rule.
//! Owns /var/lib/rancher/k3s/server and /etc/rancher/k3s/k3s.yaml.
use crate::api::{self, Request, Response};
use crate::cluster::{self, EventReport, Node, Secret, State};
use crate::config::Config;
use crate::kubelet::{Kubelet, PodAssignment, PodReport};
use crate::paths::Paths;
use crate::pull::Puller;
use crate::registries::Registries;
use crate::release::{self, Release};
use crate::simconf::{SimConf, UpstreamConf};
use crate::util::{log, now_ms, write_file};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

pub const NODE_PASSWORD_REJECTED: &str = "Node password rejected, duplicate hostname or contents of '/etc/rancher/node/password' may not match server node-passwd entry, try enabling a unique node name with the --with-node-id flag";

/// What a node tells the server about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    pub password: String,
    pub ip: String,
    pub os_image: String,
    pub kernel: String,
    pub arch: String,
    pub kubelet_version: String,
    pub container_runtime: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncRequest {
    pub node: NodeInfo,
    pub reports: Vec<PodReport>,
    pub events: Vec<EventReport>,
}

/// Everything `k3s kubectl` needs (the server's view).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    pub now_ms: u64,
    pub node_grace_ms: u64,
    pub state: State,
}

pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is valid for 256 bytes; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).to_string()
}

pub fn node_name(cfg: &Config) -> String {
    cfg.get("node-name").unwrap_or_else(hostname).to_lowercase()
}

/// This node's address: node-ip, bind-address, sim.conf node-ip, or a loopback address other
/// than 127.0.0.1 that the hostname resolves to. Only loopback addresses are ever accepted.
pub fn node_ip(cfg: &Config, sim: &SimConf) -> Result<String, String> {
    let cand = cfg.list("node-ip").first().cloned().or_else(|| cfg.get("bind-address")).or_else(|| sim.node_ip.clone()).or_else(|| {
        use std::net::ToSocketAddrs;
        (hostname().as_str(), 0u16).to_socket_addrs().ok()?.map(|a| a.ip().to_string()).find(|ip| ip.starts_with("127.") && ip != "127.0.0.1")
    });
    let ip = cand.ok_or("unable to find this node's address: set node-ip in /etc/rancher/k3s/config.yaml or in /etc/rvlab/sim.conf")?;
    match ip.parse::<std::net::Ipv4Addr>() {
        Ok(a) if a.is_loopback() => Ok(ip),
        _ => Err(format!("node address {ip} is not a loopback address: the board lab only uses 127.0.0.0/8")),
    }
}

pub fn os_image(paths: &Paths) -> String {
    let t = std::fs::read_to_string(paths.os_release()).or_else(|_| std::fs::read_to_string("/etc/os-release")).unwrap_or_default();
    t.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=")).map(|v| v.trim_matches('"').to_string()).unwrap_or("Linux".into())
}

pub fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// Read or create this node's password (/etc/rancher/node/password, 0600).
pub fn node_password(paths: &Paths) -> Result<String, String> {
    let p = paths.node_password();
    if let Ok(s) = std::fs::read_to_string(&p)
        && !s.trim().is_empty() {
            return Ok(s.trim().to_string());
        }
    let pw = crate::util::random_hex(16);
    write_file(&p, format!("{pw}\n").as_bytes(), 0o600).map_err(|e| format!("failed to write {}: {e}", p.display()))?;
    Ok(pw)
}

/// Split a join token: `K10<ca-hash>::<user>:<password>` or a bare password.
pub fn parse_token(t: &str) -> (Option<String>, String) {
    let t = t.trim();
    if let Some(rest) = t.strip_prefix("K10")
        && let Some((hash, creds)) = rest.split_once("::") {
            let pw = creds.split_once(':').map(|(_, p)| p).unwrap_or(creds);
            return (Some(hash.to_string()), pw.to_string());
        }
    (None, t.to_string())
}

pub fn sd_notify_ready() {
    let Some(sock) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let sock = sock.to_string_lossy().to_string();
    let Ok(s) = std::os::unix::net::UnixDatagram::unbound() else { return };
    if let Some(name) = sock.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        if let Ok(addr) = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()) {
            let _ = s.send_to_addr(b"READY=1", &addr);
        }
    } else {
        let _ = s.send_to(b"READY=1", &sock);
    }
}

fn password_hash(node: &str, pw: &str) -> String {
    crate::util::sha256_hex(format!("{node}:{pw}").as_bytes())
}

/// Admit a node under the node-password rule; upsert its Node object.
pub fn admit(st: &mut State, info: &NodeInfo, server: bool, now: u64) -> Result<(), String> {
    let key = format!("kube-system/{}.node-password.k3s", info.name);
    let hash = password_hash(&info.name, &info.password);
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(hash.as_bytes());
    match st.secrets.get(&key) {
        Some(s) if s.data.get("hash") != Some(&b64) => {
            log("error", &format!("Node password validation failed for '{}', using passwd file ''", info.name));
            return Err(NODE_PASSWORD_REJECTED.into());
        }
        Some(_) => {}
        None => {
            st.secrets.insert(
                key,
                Secret {
                    namespace: "kube-system".into(),
                    name: format!("{}.node-password.k3s", info.name),
                    uid: cluster::uid(),
                    type_: "k3s.cattle.io/node-password".into(),
                    data: BTreeMap::from([("hash".to_string(), b64)]),
                    created_ms: now,
                },
            );
        }
    }
    upsert_node(st, info, server, now);
    Ok(())
}

fn upsert_node(st: &mut State, info: &NodeInfo, server: bool, now: u64) {
    let index = match st.nodes.get(&info.name) {
        Some(n) => n.index,
        None => {
            let i = st.next_node_index;
            st.next_node_index += 1;
            log("info", &format!("Node {} registered (10.42.{i}.0/24)", info.name));
            st.audit(now, "create", "Node", None, &info.name, &[]);
            i
        }
    };
    let (unschedulable, unschedulable_since_ms) = st.nodes.get(&info.name).map(|n| (n.unschedulable, n.unschedulable_since_ms)).unwrap_or_default();
    let created = st.nodes.get(&info.name).map(|n| n.created_ms).unwrap_or(now);
    let uid = st.nodes.get(&info.name).map(|n| n.uid.clone()).unwrap_or_else(cluster::uid);
    st.nodes.insert(
        info.name.clone(),
        Node {
            name: info.name.clone(),
            uid,
            internal_ip: info.ip.clone(),
            server,
            index,
            created_ms: created,
            last_heartbeat_ms: now,
            ready: true,
            os_image: info.os_image.clone(),
            kernel: info.kernel.clone(),
            arch: info.arch.clone(),
            kubelet_version: info.kubelet_version.clone(),
            container_runtime: info.container_runtime.clone(),
            unschedulable,
            unschedulable_since_ms,
        },
    );
}

pub fn assignments_for(st: &State, node: &str) -> Vec<PodAssignment> {
    st.pods
        .values()
        .filter(|p| p.node == node && p.active())
        .map(|p| PodAssignment {
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            uid: p.uid.clone(),
            containers: p.containers.clone(),
            init_containers: p.init_containers.clone(),
            pull_always: p.containers.iter().chain(&p.init_containers).filter(|(n, i)| p.pull_policy_of(n, i) == "Always").map(|(n, _)| n.clone()).collect(),
            pull_never: p.containers.iter().chain(&p.init_containers).filter(|(n, i)| p.pull_policy_of(n, i) == "Never").map(|(n, _)| n.clone()).collect(),
            is_job: p.owner_kind == "Job",
            prev: p.status.clone(),
        })
        .collect()
}

pub fn apply_sync(st: &mut State, req: &SyncRequest, server: bool, now: u64) {
    // a running kubelet re-registers its Node object if it was deleted
    if let Some(n) = st.nodes.get_mut(&req.node.name) {
        n.last_heartbeat_ms = now;
        n.ready = true;
        n.kubelet_version = req.node.kubelet_version.clone();
    } else {
        upsert_node(st, &req.node, server, now);
    }
    // pods with a deletionTimestamp on this node: its kubelet has stopped them (it no longer
    // gets them assigned), so the API object goes
    let node = req.node.name.clone();
    st.pods.retain(|_, p| !(p.node == node && p.deleting_ms.is_some()));
    for r in &req.reports {
        if let Some(p) = st.pods.get_mut(&format!("{}/{}", r.namespace, r.name))
            && p.uid == r.uid && p.node == req.node.name {
                p.status = r.status.clone();
            }
    }
    for e in &req.events {
        if st.pods.values().any(|p| p.uid == e.pod_uid) {
            st.add_event(e, now);
        }
    }
}

/// Append the pending audit records to server/logs/audit.log, one JSON object per line.
/// Real k3s writes a kube-apiserver audit log only with `kube-apiserver-arg: audit-log-path=...`
/// (and a policy); the simulator always writes this simplified one so tests can assert order.
pub fn flush_audit(paths: &Paths, st: &mut State) {
    if st.audit.is_empty() {
        return;
    }
    let mut text = String::new();
    for r in st.audit.drain(..) {
        text.push_str(&r.to_string());
        text.push('\n');
    }
    let path = paths.audit_log();
    if let Some(d) = path.parent() {
        let _ = std::fs::create_dir_all(d);
    }
    use std::io::Write;
    match std::fs::OpenOptions::new().create(true).append(true).open(&path) {
        Ok(mut f) => {
            let _ = f.write_all(text.as_bytes());
        }
        Err(e) => log("error", &format!("failed to write audit log {}: {e}", path.display())),
    }
}

/// kube-apiserver's /version document for a k3s version.
pub fn version_json(version: &str) -> Value {
    let core = version.trim_start_matches('v');
    let mut it = core.split(['.', '+', '-']);
    let (major, minor) = (it.next().unwrap_or("1"), it.next().unwrap_or("0"));
    json!({"major": major, "minor": minor, "gitVersion": version, "gitCommit": crate::util::sha256_hex(version.as_bytes())[..40].to_string(), "gitTreeState": "clean", "goVersion": release::for_version(version).get("go"), "compiler": "gc", "platform": "linux/riscv64"})
}

/// The health endpoints kube-apiserver serves (/readyz, /livez, /healthz); `?verbose` lists checks.
fn health(path: &str, query: &str) -> Response {
    let name = path.trim_start_matches('/');
    if !query.split('&').any(|q| q == "verbose" || q.starts_with("verbose=")) {
        return Response::text(200, "ok");
    }
    let mut checks = vec!["ping", "log", "etcd", "poststarthook/start-apiserver-admission-initializer"];
    if name == "readyz" {
        checks.insert(2, "informer-sync");
        checks.push("shutdown");
    }
    let mut out: String = checks.iter().map(|c| format!("[+]{c} ok\n")).collect();
    out.push_str(&format!("{name} check passed\n"));
    Response::text(200, &out)
}

struct Shared {
    paths: Paths,
    state: Mutex<State>,
    token_password: String,
    admin_token: String,
    ca_pem: String,
    sim: SimConf,
}

fn basic_password(req: &Request) -> Option<String> {
    use base64::Engine;
    let v = req.header("authorization")?.strip_prefix("Basic ")?;
    let raw = base64::engine::general_purpose::STANDARD.decode(v.trim()).ok()?;
    let s = String::from_utf8(raw).ok()?;
    Some(s.split_once(':').map(|(_, p)| p.to_string()).unwrap_or(s))
}

fn handle(sh: &Shared, req: Request) -> Response {
    let now = now_ms();
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/cacerts") => Response::text(200, &sh.ca_pem),
        ("GET", "/ping") => Response::text(200, "pong"),
        ("GET", "/readyz") | ("GET", "/livez") | ("GET", "/healthz") => health(&req.path, &req.query),
        ("GET", "/version") => {
            let v = sh.state.lock().unwrap_or_else(|e| e.into_inner()).version.clone();
            Response::json(200, &version_json(&v))
        }
        ("POST", "/v1-k3s/rvlab/register") | ("POST", "/v1-k3s/rvlab/sync") => {
            if basic_password(&req).as_deref() != Some(sh.token_password.as_str()) {
                return Response::text(401, "Unauthorized");
            }
            let Ok(body) = req.json() else { return Response::text(400, "bad request") };
            let mut st = sh.state.lock().unwrap_or_else(|e| e.into_inner());
            if req.path.ends_with("register") {
                let Ok(info) = serde_json::from_value::<NodeInfo>(body) else { return Response::text(400, "bad node info") };
                let r = admit(&mut st, &info, false, now);
                st.audit_node_transitions(now, sh.sim.node_grace_ms);
                flush_audit(&sh.paths, &mut st);
                match r {
                    Ok(()) => Response::json(200, &json!({"ok": true})),
                    Err(e) => Response::text(403, &e),
                }
            } else {
                let Ok(sync) = serde_json::from_value::<SyncRequest>(body) else { return Response::text(400, "bad sync") };
                apply_sync(&mut st, &sync, false, now);
                st.audit_node_transitions(now, sh.sim.node_grace_ms);
                flush_audit(&sh.paths, &mut st);
                Response::json(200, &serde_json::to_value(assignments_for(&st, &sync.node.name)).unwrap_or(Value::Null))
            }
        }
        (m, p) if p.starts_with("/v1-k3s/rvlab/state") || p.starts_with("/v1-k3s/rvlab/delete") || p == "/v1-k3s/rvlab/cordon" || p == "/v1-k3s/rvlab/evict" => {
            if req.header("authorization") != Some(&format!("Bearer {}", sh.admin_token)) {
                return Response::json(401, &json!({"kind": "Status", "status": "Failure", "message": "Unauthorized", "reason": "Unauthorized", "code": 401}));
            }
            let mut st = sh.state.lock().unwrap_or_else(|e| e.into_inner());
            if m == "GET" {
                let snap = Snapshot { now_ms: now, node_grace_ms: sh.sim.node_grace_ms, state: st.clone() };
                return Response::json(200, &serde_json::to_value(snap).unwrap_or(Value::Null));
            }
            let Ok(b) = req.json() else { return Response::text(400, "bad request") };
            let (kind, ns, name) = (b["kind"].as_str().unwrap_or(""), b["namespace"].as_str().unwrap_or("default"), b["name"].as_str().unwrap_or(""));
            if p == "/v1-k3s/rvlab/cordon" {
                let r = st.set_unschedulable(name, b["unschedulable"].as_bool().unwrap_or(true), now);
                flush_audit(&sh.paths, &mut st);
                return match r {
                    Some(changed) => Response::json(200, &json!({"changed": changed})),
                    None => Response::json(404, &json!({"changed": false})),
                };
            }
            if p == "/v1-k3s/rvlab/evict" {
                let verb = if b["delete"].as_bool().unwrap_or(false) { "delete" } else { "evict" };
                let found = st.evict(ns, name, verb, now);
                flush_audit(&sh.paths, &mut st);
                return if found { Response::json(200, &json!({"evicted": true})) } else { Response::json(404, &json!({"evicted": false})) };
            }
            let found = match kind {
                "node" => st.delete_node(name),
                "secret" => st.secrets.remove(&format!("{ns}/{name}")).is_some(),
                "pod" => {
                    let k = format!("{ns}/{name}");
                    st.pods.remove(&k).is_some()
                }
                "deployment" | "daemonset" | "job" => {
                    let kk = match kind {
                        "deployment" => "Deployment",
                        "daemonset" => "DaemonSet",
                        _ => "Job",
                    };
                    let k = cluster::wkey(kk, ns, name);
                    let had = st.workloads.contains_key(&k);
                    st.delete_workload(&k);
                    had
                }
                _ => return Response::text(400, &format!("the server doesn't have a resource type \"{kind}\"")),
            };
            if found {
                let k = match kind {
                    "node" => "Node",
                    "secret" => "Secret",
                    "pod" => "Pod",
                    "deployment" => "Deployment",
                    "daemonset" => "DaemonSet",
                    _ => "Job",
                };
                st.audit(now, "delete", k, (kind != "node").then_some(ns), name, &[]);
                flush_audit(&sh.paths, &mut st);
            }
            if found { Response::json(200, &json!({"deleted": true})) } else { Response::json(404, &json!({"deleted": false})) }
        }
        _ => Response::text(404, "404 page not found"),
    }
}

fn load_state(paths: &Paths) -> State {
    std::fs::read(paths.state_db()).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

fn save_state(paths: &Paths, st: &State) {
    if let Ok(b) = serde_json::to_vec(st) {
        let _ = write_file(&paths.state_db(), &b, 0o600);
    }
}

fn fatal(msg: &str) -> i32 {
    log("fatal", msg);
    1
}

/// Kubeconfig text as k3s writes it (server URL on the node's own address in the lab).
pub fn kubeconfig(server_url: &str, ca_pem: &str, token: &str) -> String {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes());
    format!(
        "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {ca}\n    server: {server_url}\n  name: default\ncontexts:\n- context:\n    cluster: default\n    user: default\n  name: default\ncurrent-context: default\nkind: Config\npreferences: {{}}\nusers:\n- name: default\n  user:\n    token: {token}\n"
    )
}

/// Write containerd's hosts.toml files from registries.yaml, as k3s does at start.
pub fn write_hosts_toml(paths: &Paths, reg: &Registries) {
    let _ = std::fs::remove_dir_all(paths.certs_d());
    for (name, m) in &reg.mirrors {
        let dir = if name == "*" { "_default".to_string() } else { name.clone() };
        let mut s = String::new();
        if name != "*" {
            s.push_str(&format!("# File generated by k3s. DO NOT EDIT.\nserver = \"{}\"\ncapabilities = [\"pull\", \"resolve\"]\n", crate::registries::default_endpoint(name)));
        }
        for e in &m.endpoint {
            if let Ok((scheme, auth, path)) = crate::registries::normalize_endpoint(e) {
                s.push_str(&format!("\n[host.\"{scheme}://{auth}{path}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"));
                if !m.rewrite.is_empty() {
                    s.push_str("  [host.\"");
                    s.push_str(&format!("{scheme}://{auth}{path}\".rewrite]\n"));
                    for (k, v) in &m.rewrite {
                        s.push_str(&format!("    \"{k}\" = \"{v}\"\n"));
                    }
                }
            }
        }
        let _ = write_file(&paths.certs_d().join(dir).join("hosts.toml"), s.as_bytes(), 0o600);
    }
}

pub struct Common {
    pub paths: Paths,
    pub sim: SimConf,
    pub cfg: Config,
    pub version: String,
    pub release: Release,
    pub node: NodeInfo,
}

/// Shared startup of server and agent: config, version, node identity.
pub fn common(args: &[String]) -> Result<Common, String> {
    let paths = Paths::from_env();
    let sim = SimConf::load(&paths);
    let mut cfg = Config::load_files(&paths)?;
    cfg.apply_env(&|k| std::env::var(k).ok());
    if let Some(extra) = cfg.get("config") {
        let t = std::fs::read_to_string(paths.user_path(&extra)).map_err(|e| format!("failed to read config {extra}: {e}"))?;
        cfg.merge_yaml(&t, &extra)?;
    }
    let positional = cfg.apply_args(args)?;
    if let Some(p) = positional.first() {
        return Err(format!("unexpected argument {p:?}"));
    }
    let version = release::effective_version(&sim);
    let rel = release::for_version(&version);
    let ip = node_ip(&cfg, &sim)?;
    let node = NodeInfo {
        name: node_name(&cfg),
        password: node_password(&paths)?,
        ip,
        os_image: os_image(&paths),
        kernel: kernel(),
        arch: sim.arch.clone(),
        kubelet_version: rel.kubelet_version(),
        container_runtime: rel.get("containerd").to_string(),
    };
    Ok(Common { paths, sim, cfg, version, release: rel, node })
}

/// registries.yaml is read once, at start (a change needs a restart, as in k3s).
pub fn puller(c: &Common) -> Result<Puller, String> {
    let reg_path = c.paths.registries_yaml();
    let registries = match std::fs::read_to_string(&reg_path) {
        Ok(t) => {
            log("info", "Using private registry config file at /etc/rancher/k3s/registries.yaml");
            Registries::parse(&t).map_err(|e| format!("failed to parse /etc/rancher/k3s/registries.yaml: {e}"))?
        }
        Err(_) => Registries::default(),
    };
    write_hosts_toml(&c.paths, &registries);
    let runtime = json!({
        "pid": std::process::id(),
        "registries_yaml": std::fs::read_to_string(&reg_path).unwrap_or_default(),
        "disable_default_endpoint": c.cfg.flag("disable-default-registry-endpoint"),
        "arch": c.sim.arch,
    });
    let _ = write_file(&c.paths.containerd_runtime(), runtime.to_string().as_bytes(), 0o600);
    Ok(Puller {
        registries,
        upstream: UpstreamConf::load(&c.paths),
        disable_default_endpoint: c.cfg.flag("disable-default-registry-endpoint"),
        arch: c.sim.arch.clone(),
        paths: c.paths.clone(),
    })
}

pub fn pause_image(c: &Common) -> String {
    if let Some(p) = c.cfg.get("pause-image") {
        return p;
    }
    let sdr = c.cfg.get("system-default-registry").filter(|s| !s.is_empty());
    match sdr {
        Some(r) => format!("{}/{}", r.trim_end_matches('/'), c.release.get("pause")),
        None => c.release.get("pause").to_string(),
    }
}

pub fn run(args: &[String]) -> i32 {
    let c = match common(args) {
        Ok(c) => c,
        Err(e) => return fatal(&e),
    };
    log("info", &format!("Starting k3s {} ({})", c.version, &crate::util::sha256_hex(c.version.as_bytes())[..8]));
    for f in &c.cfg.files {
        log("info", &format!("Found configuration file {f}"));
    }
    let puller = match puller(&c) {
        Ok(p) => p,
        Err(e) => return fatal(&e),
    };
    let paths = c.paths.clone();
    let port: u16 = c.cfg.get("https-listen-port").and_then(|p| p.parse().ok()).unwrap_or(6443);
    let bind = c.cfg.get("bind-address").unwrap_or(c.node.ip.clone());
    if !bind.parse::<std::net::Ipv4Addr>().map(|a| a.is_loopback()).unwrap_or(false) {
        return fatal(&format!("bind-address {bind} is not a loopback address: the board lab only uses 127.0.0.0/8"));
    }
    let mut sans = vec![c.node.ip.clone(), bind.clone(), "127.0.0.1".into(), "localhost".into(), "kubernetes".into(), c.node.name.clone()];
    sans.extend(c.cfg.list("tls-san"));
    sans.sort();
    sans.dedup();
    let tls = match api::server_tls(&paths, &sans) {
        Ok(t) => t,
        Err(e) => return fatal(&format!("failed to set up TLS: {e}")),
    };
    // token
    let existing = std::fs::read_to_string(paths.token()).ok().map(|t| parse_token(&t).1);
    let token_password = match c.cfg.get("token").or_else(|| c.cfg.get("token-file").and_then(|f| std::fs::read_to_string(paths.user_path(&f)).ok())) {
        Some(t) => parse_token(&t).1,
        None => existing.unwrap_or_else(|| crate::util::random_hex(16)),
    };
    let full_token = format!("K10{}::server:{token_password}", api::ca_hash(&tls.ca_pem));
    for p in [paths.token(), paths.node_token()] {
        if let Err(e) = write_file(&p, format!("{full_token}\n").as_bytes(), 0o600) {
            return fatal(&format!("failed to write {}: {e}", p.display()));
        }
    }
    let admin_token = match std::fs::read_to_string(paths.admin_token()) {
        Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
        _ => {
            let t = crate::util::random_hex(24);
            let _ = write_file(&paths.admin_token(), t.as_bytes(), 0o600);
            t
        }
    };
    let kc_path = c.cfg.get("write-kubeconfig").map(|p| paths.user_path(&p)).unwrap_or(paths.kubeconfig());
    let mode = c.cfg.get("write-kubeconfig-mode").and_then(|m| u32::from_str_radix(m.trim_start_matches("0o"), 8).ok()).unwrap_or(0o600);
    let server_url = format!("https://{bind}:{port}");
    if let Err(e) = write_file(&kc_path, kubeconfig(&server_url, &tls.ca_pem, &admin_token).as_bytes(), mode) {
        return fatal(&format!("failed to write kubeconfig: {e}"));
    }
    log("info", &format!("Wrote kubeconfig {}", kc_path.strip_prefix(&paths.root).map(|p| format!("/{}", p.display())).unwrap_or_default()));
    // manifests
    let sdr = c.cfg.get("system-default-registry");
    let disabled = |a: &str| c.cfg.disabled(a);
    let removed = match crate::manifests::write_packaged(&paths.manifests(), &c.release, sdr.as_deref(), &disabled) {
        Ok(r) => r,
        Err(e) => return fatal(&format!("failed to write manifests: {e}")),
    };
    let mut st = load_state(&paths);
    st.version = c.version.clone();
    for r in &removed {
        st.uninstall_source(r);
    }
    st.servicelb = !c.cfg.disabled("servicelb");
    let lb = c.release.get("servicelb");
    st.lb_image = match sdr.as_deref().filter(|s| !s.is_empty()) {
        Some(r) => format!("{}/{lb}", r.trim_end_matches('/')),
        None => lb.to_string(),
    };
    if !st.servicelb {
        let svclb: Vec<String> = st.workloads.values().filter(|w| w.spec.name.starts_with("svclb-") && w.spec.kind == "DaemonSet").map(|w| w.key()).collect();
        for k in svclb {
            st.delete_workload(&k);
        }
    }
    let now = now_ms();
    if let Err(e) = admit(&mut st, &c.node, true, now) {
        log("error", &e);
    }
    st.applied.clear(); // re-apply every manifest at start
    let shared = Arc::new(Shared { paths: paths.clone(), state: Mutex::new(st), token_password, admin_token, ca_pem: tls.ca_pem.clone(), sim: c.sim.clone() });
    let listener = match std::net::TcpListener::bind((bind.as_str(), port)) {
        Ok(l) => l,
        Err(e) => return fatal(&format!("failed to listen on {bind}:{port}: {e}")),
    };
    {
        let sh = shared.clone();
        let cfg = tls.config.clone();
        std::thread::spawn(move || api::serve(listener, cfg, Arc::new(move |r| handle(&sh, r))));
    }
    // this node's kubelet
    {
        let sh = shared.clone();
        let mut kubelet = Kubelet::new(&c.node.name, puller, &pause_image(&c), &c.sim, &paths);
        let info = c.node.clone();
        let sync_ms = c.sim.sync_ms;
        let grace = c.sim.node_grace_ms;
        let audit_paths = paths.clone();
        std::thread::spawn(move || loop {
            let pods = assignments_for(&sh.state.lock().unwrap_or_else(|e| e.into_inner()), &info.name);
            kubelet.gc_sandboxes(&pods);
            let (reports, events) = kubelet.sync(&pods, now_ms());
            {
                let mut st = sh.state.lock().unwrap_or_else(|e| e.into_inner());
                apply_sync(&mut st, &SyncRequest { node: info.clone(), reports, events }, true, now_ms());
                st.audit_node_transitions(now_ms(), grace);
                flush_audit(&audit_paths, &mut st);
            }
            std::thread::sleep(std::time::Duration::from_millis(sync_ms));
        });
    }
    log("info", &format!("k3s is up and running, API at {server_url}"));
    let mut notified = false;
    let mut last_saved = String::new();
    let helm = match sdr.as_deref().filter(|s| !s.is_empty()) {
        Some(r) => format!("{}/{}", r.trim_end_matches('/'), c.release.get("helm")),
        None => c.release.get("helm").to_string(),
    };
    loop {
        let now = now_ms();
        // manifests: applied at start and whenever a file changes
        let files = crate::manifests::scan(&paths.manifests());
        let mut changed = Vec::new();
        {
            let st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            for f in &files {
                let Ok(text) = std::fs::read_to_string(paths.manifests().join(f)) else { continue };
                let h = crate::util::sha256_hex(text.as_bytes());
                if st.applied.get(f) != Some(&h) {
                    changed.push((f.clone(), text, h));
                }
            }
        }
        for (f, text, h) in changed {
            match crate::manifests::parse(&text, &f, &helm) {
                Ok(specs) => {
                    let mut st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
                    st.apply_file(&f, specs, now);
                    st.applied.insert(f.clone(), h);
                    log("info", &format!("Applied manifest {f} as AddOn {}", crate::manifests::addon_name(&f)));
                }
                Err(e) => {
                    log("error", &format!("Failed to process manifest {f}: {e}"));
                    shared.state.lock().unwrap_or_else(|e| e.into_inner()).applied.insert(f.clone(), h);
                }
            }
        }
        let snapshot = {
            let mut st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            let grace = c.sim.node_grace_ms;
            for n in st.nodes.values_mut() {
                if n.ready && now.saturating_sub(n.last_heartbeat_ms) > grace {
                    n.ready = false;
                }
            }
            st.reconcile(now);
            st.audit_node_transitions(now, grace);
            flush_audit(&paths, &mut st);
            serde_json::to_string(&*st).unwrap_or_default()
        };
        if snapshot != last_saved {
            if let Ok(st) = serde_json::from_str::<State>(&snapshot) {
                save_state(&paths, &st);
            }
            last_saved = snapshot;
        }
        if !notified {
            sd_notify_ready();
            notified = true;
        }
        std::thread::sleep(std::time::Duration::from_millis(c.sim.sync_ms));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn info(name: &str, pw: &str) -> NodeInfo {
        NodeInfo { name: name.into(), password: pw.into(), ip: "127.0.3.2".into(), os_image: "x".into(), kernel: "k".into(), arch: "riscv64".into(), kubelet_version: "v1".into(), container_runtime: "c".into() }
    }
    #[test]
    fn node_password_rule() {
        let mut st = State::default();
        admit(&mut st, &info("agent1", "pw-a"), false, 1).unwrap();
        admit(&mut st, &info("agent1", "pw-a"), false, 2).unwrap();
        // re-flashed board: new random password, same hostname
        assert_eq!(admit(&mut st, &info("agent1", "pw-b"), false, 3).unwrap_err(), NODE_PASSWORD_REJECTED);
        st.delete_node("agent1");
        assert!(admit(&mut st, &info("agent1", "pw-b"), false, 4).is_err(), "deleting the node alone is not enough");
        st.secrets.remove("kube-system/agent1.node-password.k3s");
        admit(&mut st, &info("agent1", "pw-b"), false, 5).unwrap();
    }
    #[test]
    fn tokens() {
        assert_eq!(parse_token("K10abc::server:secret"), (Some("abc".into()), "secret".into()));
        assert_eq!(parse_token("K10abc::node:x:y"), (Some("abc".into()), "x:y".into()));
        assert_eq!(parse_token("plain\n"), (None, "plain".into()));
    }
}
