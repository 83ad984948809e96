//! `k3s kubectl` (and `kubectl` via argv[0]): the subset rvcluster and people use on a board —
//! get nodes/pods/events/secrets (table, wide, json, yaml, name), describe pod, logs, delete
//! node/pod/secret/workload — talking to the server named in /etc/rancher/k3s/k3s.yaml (or
//! KUBECONFIG / --kubeconfig). Output mimics kubectl. Owns no files.
use crate::api::Client;
use crate::cluster::{self, CState, Pod};
use crate::paths::Paths;
use crate::server::Snapshot;
use serde_json::Value;

#[derive(Debug, Default)]
struct Args {
    verb: String,
    resources: Vec<String>,
    names: Vec<String>,
    namespace: Option<String>,
    all_namespaces: bool,
    output: Option<String>,
    selector: Option<String>,
    container: Option<String>,
    kubeconfig: Option<String>,
    ignore_not_found: bool,
    raw: Option<String>,
    force: bool,
    ignore_daemonsets: bool,
    delete_emptydir_data: bool,
    disable_eviction: bool,
    /// --timeout (0: wait for ever, as kubectl drain's default)
    timeout_ms: u64,
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut a = Args::default();
    let mut pos = Vec::new();
    let mut i = 0;
    let take = |i: &mut usize, name: &str| -> Result<String, String> {
        *i += 1;
        args.get(*i - 1).cloned().ok_or(format!("error: flag needs an argument: {name}"))
    };
    while i < args.len() {
        let s = args[i].clone();
        i += 1;
        let (flag, inline) = match s.split_once('=') {
            Some((f, v)) if f.starts_with('-') => (f.to_string(), Some(v.to_string())),
            _ => (s.clone(), None),
        };
        let val = |i: &mut usize| -> Result<String, String> { match &inline { Some(v) => Ok(v.clone()), None => take(i, &flag) } };
        match flag.as_str() {
            "-n" | "--namespace" => a.namespace = Some(val(&mut i)?),
            "-A" | "--all-namespaces" => a.all_namespaces = true,
            "-o" | "--output" => a.output = Some(val(&mut i)?),
            "-l" | "--selector" => a.selector = Some(val(&mut i)?),
            "-c" | "--container" => a.container = Some(val(&mut i)?),
            "--kubeconfig" => a.kubeconfig = Some(val(&mut i)?),
            "--ignore-not-found" => a.ignore_not_found = inline.as_deref() != Some("false"),
            "--force" => a.force = inline.as_deref() != Some("false"),
            "--ignore-daemonsets" => a.ignore_daemonsets = inline.as_deref() != Some("false"),
            // --delete-local-data is the deprecated name of --delete-emptydir-data
            "--delete-emptydir-data" | "--delete-local-data" => a.delete_emptydir_data = inline.as_deref() != Some("false"),
            "--disable-eviction" => a.disable_eviction = inline.as_deref() != Some("false"),
            "--raw" => a.raw = Some(val(&mut i)?),
            "--timeout" => {
                let v = val(&mut i)?;
                a.timeout_ms = parse_go_duration(&v).ok_or(format!("error: invalid argument \"{v}\" for \"--timeout\" flag: time: invalid duration \"{v}\""))?;
            }
            "--grace-period" => {
                let v = val(&mut i)?;
                v.parse::<i64>().map_err(|_| format!("error: invalid argument \"{v}\" for \"--grace-period\" flag: strconv.ParseInt: parsing \"{v}\": invalid syntax"))?;
            }
            "--no-headers" | "--wait" => {}
            "--tail" | "--request-timeout" => {
                val(&mut i)?;
            }
            f if f.starts_with('-') && f.len() > 1 => return Err(format!("error: unknown flag: {f}")),
            _ => pos.push(s),
        }
    }
    let mut it = pos.into_iter();
    a.verb = it.next().unwrap_or_default();
    let rest: Vec<String> = it.collect();
    if a.verb == "logs" {
        a.names = rest;
        return Ok(a);
    }
    let mut rest = rest.into_iter();
    if let Some(r) = rest.next() {
        if let Some((kind, name)) = r.split_once('/') {
            a.resources = vec![kind.to_string()];
            a.names.push(name.to_string());
        } else {
            a.resources = r.split(',').map(str::to_string).collect();
        }
    }
    a.names.extend(rest);
    Ok(a)
}

/// A Go duration (`300ms`, `5s`, `1m30s`, `2h`) in milliseconds.
pub fn parse_go_duration(s: &str) -> Option<u64> {
    if s == "0" {
        return Some(0);
    }
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let num: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let mult = match &rest[..u] {
            "ms" => 1.0,
            "s" => 1000.0,
            "m" => 60_000.0,
            "h" => 3_600_000.0,
            _ => return None,
        };
        total += num * mult;
        rest = &rest[u..];
    }
    Some(total as u64)
}

/// Go's time.Duration.String() for whole milliseconds (`5s`, `1m30s`, `5m0s`, `300ms`).
pub fn go_duration(ms: u64) -> String {
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, m, s, frac) = (ms / 3_600_000, (ms / 60_000) % 60, (ms / 1000) % 60, ms % 1000);
    let secs = if frac == 0 { format!("{s}s") } else { format!("{s}.{}s", format!("{frac:03}").trim_end_matches('0')) };
    if h > 0 {
        format!("{h}h{m}m{secs}")
    } else if m > 0 {
        format!("{m}m{secs}")
    } else {
        secs
    }
}

fn canonical(r: &str) -> Option<&'static str> {
    Some(match r {
        "node" | "nodes" | "no" => "nodes",
        "pod" | "pods" | "po" => "pods",
        "event" | "events" | "ev" => "events",
        "secret" | "secrets" => "secrets",
        "deployment" | "deployments" | "deploy" => "deployments",
        "daemonset" | "daemonsets" | "ds" => "daemonsets",
        "job" | "jobs" => "jobs",
        "namespace" | "namespaces" | "ns" => "namespaces",
        _ => return None,
    })
}

/// kubectl's short human duration.
pub fn age(ms: u64) -> String {
    let s = ms / 1000;
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        format!("{m}m{}s", s % 60)
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        format!("{h}h{}m", m % 60)
    } else if h < 48 {
        format!("{h}h")
    } else if d < 8 {
        format!("{d}d{}h", h % 24)
    } else {
        format!("{d}d")
    }
}

fn table(rows: Vec<Vec<String>>) -> String {
    let cols = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols).map(|c| rows.iter().map(|r| r.get(c).map(|s| s.chars().count()).unwrap_or(0)).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}   ", w = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The STATUS column kubectl computes for a pod.
pub fn pod_status_column(p: &Pod) -> String {
    if p.deleting_ms.is_some() {
        return "Terminating".into();
    }
    if p.node.is_empty() {
        return "Pending".into();
    }
    let phase = p.phase();
    if phase == "Succeeded" {
        return "Completed".into();
    }
    let total = p.init_containers.len();
    for (i, (name, _)) in p.init_containers.iter().enumerate() {
        match p.status.init_containers.iter().find(|c| &c.name == name).map(|c| &c.state) {
            Some(CState::Terminated { exit_code: 0, .. }) => continue,
            Some(CState::Waiting { reason, .. }) if !reason.is_empty() && reason != "PodInitializing" => return format!("Init:{reason}"),
            Some(CState::Terminated { reason, .. }) => return format!("Init:{reason}"),
            _ => return format!("Init:{i}/{total}"),
        }
    }
    for c in &p.status.containers {
        if let CState::Waiting { reason, .. } = &c.state
            && !reason.is_empty() {
                return reason.clone();
            }
        if let CState::Terminated { reason, .. } = &c.state {
            return reason.clone();
        }
    }
    if p.status.containers.is_empty() {
        return if p.status.sandbox_ready { "Pending".into() } else { "ContainerCreating".into() };
    }
    phase.to_string()
}

fn matches_selector(labels: &std::collections::BTreeMap<String, String>, sel: &Option<String>) -> bool {
    let Some(sel) = sel else { return true };
    sel.split(',').all(|term| match term.split_once("!=") {
        Some((k, v)) => labels.get(k.trim()).map(|x| x != v.trim()).unwrap_or(true),
        None => match term.split_once('=') {
            Some((k, v)) => labels.get(k.trim().trim_end_matches('=')).map(|x| x == v.trim()).unwrap_or(false),
            None => labels.contains_key(term.trim()),
        },
    })
}

struct Conn {
    client: Client,
    server: String,
}

fn connect(a: &Args, paths: &Paths) -> Result<Conn, String> {
    let path = a
        .kubeconfig
        .clone()
        .map(|p| paths.user_path(&p))
        .or_else(|| std::env::var("KUBECONFIG").ok().filter(|s| !s.is_empty()).map(|p| paths.user_path(&p)))
        .unwrap_or(paths.kubeconfig());
    let text = std::fs::read_to_string(&path).map_err(|_| "The connection to the server localhost:8080 was refused - did you specify the right host or port?".to_string())?;
    let v: Value = serde_saphyr::from_str(&text).map_err(|e| format!("error: error loading config file \"{}\": {e}", path.display()))?;
    let server = v["clusters"][0]["cluster"]["server"].as_str().ok_or("error: no server found for cluster \"default\"")?.to_string();
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD
        .decode(v["clusters"][0]["cluster"]["certificate-authority-data"].as_str().unwrap_or(""))
        .map_err(|e| format!("error: invalid certificate-authority-data: {e}"))?;
    let token = v["users"][0]["user"]["token"].as_str().unwrap_or("").to_string();
    let client = Client::new(&server, &ca, format!("Bearer {token}"))?;
    Ok(Conn { client, server })
}

fn unreachable(conn: &Conn) -> String {
    let hp = conn.server.trim_start_matches("https://");
    format!("The connection to the server {hp} was refused - did you specify the right host or port?")
}

fn snapshot(conn: &Conn) -> Result<Snapshot, String> {
    match conn.client.call("GET", "/v1-k3s/rvlab/state", None) {
        Ok((200, body)) => serde_json::from_slice(&body).map_err(|e| format!("error: {e}")),
        Ok((401, _)) => Err("error: You must be logged in to the server (Unauthorized)".into()),
        Ok((st, _)) => Err(format!("Error from server: status {st}")),
        Err(_) => Err(unreachable(conn)),
    }
}

pub struct Out {
    pub stdout: String,
    pub stderr: String,
    pub code: i32,
}

fn ok(s: String) -> Out {
    Out { stdout: s, stderr: String::new(), code: 0 }
}
fn err(s: String) -> Out {
    Out { stdout: String::new(), stderr: if s.ends_with('\n') { s } else { s + "\n" }, code: 1 }
}

fn ns_of(a: &Args) -> Option<String> {
    if a.all_namespaces { None } else { Some(a.namespace.clone().unwrap_or("default".into())) }
}

fn render_values(items: Vec<Value>, single: bool, output: &str) -> Result<String, String> {
    let v = if single && items.len() == 1 { items.into_iter().next().unwrap_or(Value::Null) } else { cluster::list_json(items) };
    match output {
        "json" => Ok(serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"),
        "yaml" => serde_saphyr::to_string(&v).map_err(|e| e.to_string()),
        o => Err(format!("error: unable to match a printer suitable for the output format \"{o}\" (the rvlab simulator supports json, yaml, wide, name)")),
    }
}

/// Run kubectl with the given arguments (without the leading "kubectl").
pub fn run(args: &[String], paths: &Paths) -> Out {
    let a = match parse_args(args) {
        Ok(a) => a,
        Err(e) => return err(e),
    };
    match a.verb.as_str() {
        "version" => {
            let conn = match connect(&a, paths) {
                Ok(c) => c,
                Err(e) => return err(e),
            };
            let v = crate::release::effective_version(&crate::simconf::SimConf::load(paths));
            let client = format!("Client Version: {v}\nKustomize Version: v5.6.0\n");
            match snapshot(&conn) {
                Ok(s) => ok(format!("{client}Server Version: {}\n", s.state.version)),
                Err(e) => Out { stdout: client, stderr: e + "\n", code: 1 },
            }
        }
        "cordon" | "uncordon" | "drain" => {
            let Some(node) = a.names.first().cloned().or_else(|| a.resources.first().cloned()) else {
                return err(format!("error: USAGE: {} NODE [flags]\nSee 'kubectl {} -h' for help and examples", a.verb, a.verb));
            };
            let conn = match connect(&a, paths) {
                Ok(c) => c,
                Err(e) => return err(e),
            };
            if a.verb == "drain" { drain(&a, &conn, &node) } else { cordon(&conn, &node, a.verb == "cordon") }
        }
        "get" if a.raw.is_some() => {
            let conn = match connect(&a, paths) {
                Ok(c) => c,
                Err(e) => return err(e),
            };
            let path = a.raw.clone().unwrap_or_default();
            match conn.client.call("GET", &path, None) {
                Ok((200, body)) => ok(String::from_utf8_lossy(&body).into_owned()),
                Ok((401, _)) => err("error: You must be logged in to the server (Unauthorized)".into()),
                Ok((404, _)) => err("Error from server (NotFound): the server could not find the requested resource".into()),
                Ok((st, body)) => err(format!("Error from server ({st}): {}", String::from_utf8_lossy(&body).trim())),
                Err(_) => err(unreachable(&conn)),
            }
        }
        "get" | "describe" | "delete" | "logs" => {
            if a.verb != "logs" && a.resources.is_empty() {
                return err(format!("error: You must specify the type of resource to {}. Use \"kubectl api-resources\" for a complete list of supported resources.", a.verb));
            }
            let conn = match connect(&a, paths) {
                Ok(c) => c,
                Err(e) => return err(e),
            };
            match a.verb.as_str() {
                "delete" => delete(&a, &conn),
                v => {
                    let snap = match snapshot(&conn) {
                        Ok(s) => s,
                        Err(e) => return err(e),
                    };
                    match v {
                        "get" => get(&a, &snap),
                        "describe" => describe(&a, &snap),
                        _ => logs(&a, &snap),
                    }
                }
            }
        }
        "" => err("kubectl controls the Kubernetes cluster manager (rvlab k3s simulator subset: get, describe, logs, delete, cordon, uncordon, drain, version)".into()),
        v => err(format!("error: unknown command \"{v}\" for \"kubectl\" (not simulated by rvlab)")),
    }
}

/// `kubectl cordon|uncordon NODE`: patch spec.unschedulable.
fn cordon(conn: &Conn, node: &str, on: bool) -> Out {
    let node = node.strip_prefix("node/").or_else(|| node.strip_prefix("nodes/")).unwrap_or(node);
    let body = serde_json::json!({"name": node, "unschedulable": on});
    match conn.client.call("POST", "/v1-k3s/rvlab/cordon", Some(&body)) {
        Ok((200, b)) => {
            let changed = serde_json::from_slice::<Value>(&b).ok().and_then(|v| v["changed"].as_bool()).unwrap_or(true);
            let what = if on { "cordoned" } else { "uncordoned" };
            ok(if changed { format!("node/{node} {what}\n") } else { format!("node/{node} already {what}\n") })
        }
        Ok((404, _)) => err(format!("Error from server (NotFound): nodes \"{node}\" not found")),
        Ok((401, _)) => err("error: You must be logged in to the server (Unauthorized)".into()),
        Ok((st, b)) => err(format!("Error from server: {st} {}", String::from_utf8_lossy(&b))),
        Err(_) => err(unreachable(conn)),
    }
}

/// `kubectl drain NODE`: cordon, then the pod filters of kubectl's drain package in their order
/// (DaemonSet, local storage, unreplicated; finished pods always deletable), refusing before
/// evicting anything; then evict (or delete) and wait until every pod is gone.
fn drain(a: &Args, conn: &Conn, node: &str) -> Out {
    let node = node.strip_prefix("node/").or_else(|| node.strip_prefix("nodes/")).unwrap_or(node).to_string();
    let c = cordon(conn, &node, true);
    if c.code != 0 {
        return c;
    }
    let mut stdout = c.stdout;
    print!("{stdout}");
    stdout.clear();
    let snap = match snapshot(conn) {
        Ok(s) => s,
        Err(e) => return err(e),
    };
    let fail = |stdout: String, msg: String, pending: &str| -> Out {
        Out { stdout, stderr: format!("{pending}error: unable to drain node \"{node}\" due to error: {msg}, continuing command...\nThere are pending nodes to be drained:\n {node}\n{msg}\n"), code: 1 }
    };
    let mut errors: Vec<(&str, Vec<String>)> = vec![
        ("DaemonSet-managed Pods (use --ignore-daemonsets to ignore)", vec![]),
        ("Pods with local storage (use --delete-emptydir-data to override)", vec![]),
        ("Pods declare no controller (use --force to override)", vec![]),
    ];
    let mut warnings: Vec<(&str, Vec<String>)> = vec![("ignoring DaemonSet-managed Pods", vec![]), ("deleting Pods with local storage", vec![]), ("deleting Pods that declare no controller", vec![])];
    let mut victims: Vec<&Pod> = Vec::new();
    for p in snap.state.pods.values().filter(|p| p.node == node) {
        let id = p.key();
        let finished = matches!(p.phase(), "Succeeded" | "Failed");
        if p.owner_kind == "DaemonSet" {
            if a.ignore_daemonsets { warnings[0].1.push(id) } else { errors[0].1.push(id) }
            continue;
        }
        if p.empty_dir && !finished {
            if !a.delete_emptydir_data {
                errors[1].1.push(id);
                continue;
            }
            warnings[1].1.push(id.clone());
        }
        if p.owner_kind == "Pod" && !finished {
            if !a.force {
                errors[2].1.push(id);
                continue;
            }
            warnings[2].1.push(id.clone());
        }
        victims.push(p);
    }
    let errs: Vec<String> = errors.iter().filter(|(_, l)| !l.is_empty()).map(|(m, l)| format!("cannot delete {m}: {}", l.join(", "))).collect();
    if !errs.is_empty() {
        let msg = if errs.len() == 1 { errs[0].clone() } else { format!("[{}]", errs.join(", ")) };
        return fail(stdout, msg, "");
    }
    let warns: Vec<String> = warnings.iter().filter(|(_, l)| !l.is_empty()).map(|(m, l)| format!("{m}: {}", l.join(", "))).collect();
    if !warns.is_empty() {
        eprintln!("Warning: {}", warns.join("; "));
    }
    let mut waiting: Vec<(String, String, String)> = Vec::new(); // ns, name, uid
    for p in &victims {
        if !a.disable_eviction {
            println!("evicting pod {}/{}", p.namespace, p.name);
        }
        let body = serde_json::json!({"namespace": p.namespace, "name": p.name, "delete": a.disable_eviction});
        match conn.client.call("POST", "/v1-k3s/rvlab/evict", Some(&body)) {
            Ok((200, _)) | Ok((404, _)) => waiting.push((p.namespace.clone(), p.name.clone(), p.uid.clone())),
            Ok((st, b)) => return fail(stdout, format!("error when evicting pods/\"{}\" -n \"{}\": {st} {}", p.name, p.namespace, String::from_utf8_lossy(&b).trim()), ""),
            Err(_) => return err(unreachable(conn)),
        }
    }
    let start = std::time::Instant::now();
    let done_word = if a.disable_eviction { "deleted" } else { "evicted" };
    while !waiting.is_empty() {
        let snap = match snapshot(conn) {
            Ok(s) => s,
            Err(e) => return Out { stdout, stderr: e + "\n", code: 1 },
        };
        waiting.retain(|(ns, name, uid)| {
            let gone = snap.state.pods.get(&format!("{ns}/{name}")).is_none_or(|p| &p.uid != uid);
            if gone {
                println!("pod/{name} {done_word}");
            }
            !gone
        });
        if waiting.is_empty() {
            break;
        }
        if a.timeout_ms > 0 && start.elapsed().as_millis() as u64 >= a.timeout_ms {
            let msg = format!("drain did not complete within {}", go_duration(a.timeout_ms));
            let pending: String = waiting.iter().map(|(_, n, _)| format!("pod/{n}\n")).collect();
            return fail(stdout, msg.clone(), &format!("There are pending pods in node \"{node}\" when an error occurred: {msg}\n{pending}"));
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    stdout.push_str(&format!("node/{node} drained\n"));
    ok(stdout)
}

fn delete(a: &Args, conn: &Conn) -> Out {
    let mut out = String::new();
    let mut code = 0;
    let mut errs = String::new();
    for r in &a.resources {
        let Some(kind) = canonical(r) else { return err(format!("error: the server doesn't have a resource type \"{r}\"")) };
        let (api_kind, singular) = match kind {
            "nodes" => ("node", "node"),
            "pods" => ("pod", "pod"),
            "secrets" => ("secret", "secret"),
            "deployments" => ("deployment", "deployment.apps"),
            "daemonsets" => ("daemonset", "daemonset.apps"),
            "jobs" => ("job", "job.batch"),
            _ => return err(format!("error: deleting {kind} is not simulated by rvlab")),
        };
        if a.names.is_empty() {
            return err("error: resource(s) were provided, but no name was specified".into());
        }
        let ns = a.namespace.clone().unwrap_or("default".into());
        for n in &a.names {
            let body = serde_json::json!({"kind": api_kind, "namespace": ns, "name": n});
            match conn.client.call("POST", "/v1-k3s/rvlab/delete", Some(&body)) {
                Ok((200, _)) => out.push_str(&format!("{singular} \"{n}\" deleted\n")),
                Ok((404, _)) if a.ignore_not_found => {}
                Ok((404, _)) => {
                    errs.push_str(&format!("Error from server (NotFound): {kind} \"{n}\" not found\n"));
                    code = 1;
                }
                Ok((st, b)) => {
                    errs.push_str(&format!("Error from server: {st} {}\n", String::from_utf8_lossy(&b)));
                    code = 1;
                }
                Err(_) => return err(unreachable(conn)),
            }
        }
        let _ = api_kind;
    }
    Out { stdout: out, stderr: errs, code }
}

fn get(a: &Args, snap: &Snapshot) -> Out {
    let st = &snap.state;
    let now = snap.now_ms;
    let ns = ns_of(a);
    let output = a.output.clone().unwrap_or_default();
    let mut values = Vec::new();
    let mut text = String::new();
    let mut names = Vec::new();
    let multi = a.resources.len() > 1;
    for r in &a.resources {
        let Some(kind) = canonical(r) else { return err(format!("error: the server doesn't have a resource type \"{r}\"")) };
        let mut rows: Vec<Vec<String>> = Vec::new();
        let mut found_any = false;
        match kind {
            "nodes" => {
                let wide = output == "wide";
                let mut h: Vec<String> = ["NAME", "STATUS", "ROLES", "AGE", "VERSION"].map(String::from).to_vec();
                if wide {
                    h.extend(["INTERNAL-IP", "EXTERNAL-IP", "OS-IMAGE", "KERNEL-VERSION", "CONTAINER-RUNTIME"].map(String::from));
                }
                rows.push(h);
                for n in st.nodes.values() {
                    if !a.names.is_empty() && !a.names.contains(&n.name) {
                        continue;
                    }
                    let j = cluster::node_json(n, now, snap.node_grace_ms);
                    let labels: std::collections::BTreeMap<String, String> = serde_json::from_value(j["metadata"]["labels"].clone()).unwrap_or_default();
                    if !matches_selector(&labels, &a.selector) {
                        continue;
                    }
                    found_any = true;
                    names.push(format!("node/{}", n.name));
                    let ready = cluster::node_ready(n, now, snap.node_grace_ms);
                    let mut row = vec![
                        n.name.clone(),
                        format!("{}{}", if ready { "Ready" } else { "NotReady" }, if n.unschedulable { ",SchedulingDisabled" } else { "" }),
                        if n.server { "control-plane,master".into() } else { "<none>".into() },
                        age(now.saturating_sub(n.created_ms)),
                        n.kubelet_version.clone(),
                    ];
                    if wide {
                        row.extend([n.internal_ip.clone(), "<none>".into(), n.os_image.clone(), n.kernel.clone(), n.container_runtime.clone()]);
                    }
                    rows.push(row);
                    values.push(j);
                }
                for n in &a.names {
                    if !st.nodes.contains_key(n) && !a.ignore_not_found {
                        return err(format!("Error from server (NotFound): nodes \"{n}\" not found"));
                    }
                }
            }
            "pods" => {
                let wide = output == "wide";
                let mut h: Vec<String> = vec![];
                if ns.is_none() {
                    h.push("NAMESPACE".into());
                }
                h.extend(["NAME", "READY", "STATUS", "RESTARTS", "AGE"].map(String::from));
                if wide {
                    h.extend(["IP", "NODE", "NOMINATED NODE", "READINESS GATES"].map(String::from));
                }
                rows.push(h);
                for p in st.pods.values() {
                    if ns.as_ref().is_some_and(|n| n != &p.namespace) || (!a.names.is_empty() && !a.names.contains(&p.name)) || !matches_selector(&p.labels, &a.selector) {
                        continue;
                    }
                    found_any = true;
                    names.push(format!("pod/{}", p.name));
                    let ready = p.status.containers.iter().filter(|c| c.ready).count();
                    let restarts: u32 = p.status.containers.iter().map(|c| c.restart_count).sum();
                    let mut row = vec![];
                    if ns.is_none() {
                        row.push(p.namespace.clone());
                    }
                    row.extend([p.name.clone(), format!("{ready}/{}", p.containers.len()), pod_status_column(p), restarts.to_string(), age(now.saturating_sub(p.created_ms))]);
                    if wide {
                        row.extend([if p.status.sandbox_ready { p.ip.clone() } else { "<none>".into() }, p.node.clone(), "<none>".into(), "<none>".into()]);
                    }
                    rows.push(row);
                    values.push(cluster::pod_json_with_host(p, st));
                }
                for n in &a.names {
                    if !a.ignore_not_found && !st.pods.values().any(|p| &p.name == n && ns.as_ref().is_none_or(|x| x == &p.namespace)) {
                        return err(format!("Error from server (NotFound): pods \"{n}\" not found"));
                    }
                }
            }
            "events" => {
                let mut h: Vec<String> = vec![];
                if ns.is_none() {
                    h.push("NAMESPACE".into());
                }
                h.extend(["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"].map(String::from));
                rows.push(h);
                let mut evs: Vec<_> = st.events.iter().filter(|e| ns.as_ref().is_none_or(|n| n == &e.namespace)).collect();
                evs.sort_by_key(|e| e.last_ms);
                for e in evs {
                    found_any = true;
                    names.push(format!("event/{}", e.name));
                    let mut row = vec![];
                    if ns.is_none() {
                        row.push(e.namespace.clone());
                    }
                    row.extend([age(now.saturating_sub(e.last_ms)), e.type_.clone(), e.reason.clone(), format!("pod/{}", e.object_name), e.message.clone()]);
                    rows.push(row);
                    values.push(cluster::event_json(e));
                }
            }
            "secrets" => {
                let mut h: Vec<String> = vec![];
                if ns.is_none() {
                    h.push("NAMESPACE".into());
                }
                h.extend(["NAME", "TYPE", "DATA", "AGE"].map(String::from));
                rows.push(h);
                for s in st.secrets.values() {
                    if ns.as_ref().is_some_and(|n| n != &s.namespace) || (!a.names.is_empty() && !a.names.contains(&s.name)) {
                        continue;
                    }
                    found_any = true;
                    names.push(format!("secret/{}", s.name));
                    let mut row = vec![];
                    if ns.is_none() {
                        row.push(s.namespace.clone());
                    }
                    row.extend([s.name.clone(), s.type_.clone(), s.data.len().to_string(), age(now.saturating_sub(s.created_ms))]);
                    rows.push(row);
                    values.push(cluster::secret_json(s));
                }
                for n in &a.names {
                    if !a.ignore_not_found && !st.secrets.values().any(|s| &s.name == n && ns.as_ref().is_none_or(|x| x == &s.namespace)) {
                        return err(format!("Error from server (NotFound): secrets \"{n}\" not found"));
                    }
                }
            }
            "namespaces" => {
                rows.push(vec!["NAME".into(), "STATUS".into(), "AGE".into()]);
                let mut set: std::collections::BTreeSet<String> = ["default", "kube-node-lease", "kube-public", "kube-system"].map(String::from).into();
                set.extend(st.workloads.values().map(|w| w.spec.namespace.clone()));
                for n in set {
                    found_any = true;
                    names.push(format!("namespace/{n}"));
                    rows.push(vec![n.clone(), "Active".into(), "-".into()]);
                    values.push(serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}, "status": {"phase": "Active"}}));
                }
            }
            "deployments" | "daemonsets" | "jobs" => {
                let kind_name = match kind {
                    "deployments" => "Deployment",
                    "daemonsets" => "DaemonSet",
                    _ => "Job",
                };
                let mut h: Vec<String> = vec![];
                if ns.is_none() {
                    h.push("NAMESPACE".into());
                }
                h.extend(match kind {
                    "deployments" => vec!["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
                    "daemonsets" => vec!["NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE", "NODE SELECTOR", "AGE"],
                    _ => vec!["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"],
                }.into_iter().map(String::from));
                rows.push(h);
                for w in st.workloads.values().filter(|w| w.spec.kind == kind_name) {
                    if ns.as_ref().is_some_and(|n| n != &w.spec.namespace) || (!a.names.is_empty() && !a.names.contains(&w.spec.name)) || !matches_selector(&w.spec.labels, &a.selector) {
                        continue;
                    }
                    found_any = true;
                    let key = w.key();
                    let pods: Vec<&Pod> = st.pods.values().filter(|p| p.workload == key).collect();
                    let ready = pods.iter().filter(|p| p.ready()).count();
                    let succeeded = pods.iter().filter(|p| p.phase() == "Succeeded").count();
                    let desired = if kind == "daemonsets" { st.nodes.len() } else { w.spec.replicas as usize };
                    let age_s = age(now.saturating_sub(w.created_ms));
                    let singular = match kind {
                        "deployments" => "deployment.apps",
                        "daemonsets" => "daemonset.apps",
                        _ => "job.batch",
                    };
                    names.push(format!("{singular}/{}", w.spec.name));
                    let mut row = vec![];
                    if ns.is_none() {
                        row.push(w.spec.namespace.clone());
                    }
                    row.push(w.spec.name.clone());
                    match kind {
                        "deployments" => row.extend([format!("{ready}/{desired}"), pods.len().to_string(), ready.to_string(), age_s]),
                        "daemonsets" => row.extend([desired.to_string(), pods.len().to_string(), ready.to_string(), pods.len().to_string(), ready.to_string(), "<none>".into(), age_s]),
                        _ => row.extend([if w.done || succeeded > 0 { "Complete".into() } else { "Running".into() }, format!("{succeeded}/1"), "-".into(), age_s]),
                    }
                    rows.push(row);
                    let containers: Vec<Value> = w.spec.containers.iter().map(|(n, i)| serde_json::json!({"name": n, "image": i})).collect();
                    let api = if kind == "jobs" { "batch/v1" } else { "apps/v1" };
                    let status = match kind {
                        "deployments" => serde_json::json!({"replicas": pods.len(), "readyReplicas": ready, "availableReplicas": ready, "updatedReplicas": pods.len()}),
                        "daemonsets" => serde_json::json!({"desiredNumberScheduled": desired, "currentNumberScheduled": pods.len(), "numberReady": ready, "numberAvailable": ready}),
                        _ => serde_json::json!({"succeeded": succeeded, "active": pods.len() - succeeded}),
                    };
                    values.push(serde_json::json!({
                        "apiVersion": api, "kind": kind_name,
                        "metadata": {"name": w.spec.name, "namespace": w.spec.namespace, "uid": w.uid, "creationTimestamp": crate::util::rfc3339(w.created_ms), "labels": w.spec.labels},
                        "spec": {"replicas": w.spec.replicas, "template": {"metadata": {"labels": w.spec.labels}, "spec": {"containers": containers}}},
                        "status": status,
                    }));
                }
            }
            other => return err(format!("error: getting {other} is not simulated by rvlab (nodes, pods, events, secrets, namespaces, deployments, daemonsets, jobs)")),
        }
        if found_any && output != "json" && output != "yaml" && output != "name" {
            if multi {
                let col = rows[0].iter().position(|h| h == "NAME");
                let prefix = match kind {
                    "nodes" => "node/",
                    "pods" => "pod/",
                    "events" => "event/",
                    "secrets" => "secret/",
                    "deployments" => "deployment.apps/",
                    "daemonsets" => "daemonset.apps/",
                    "jobs" => "job.batch/",
                    _ => "namespace/",
                };
                for r in rows.iter_mut().skip(1) {
                    if let Some(c) = col {
                        r[c] = format!("{prefix}{}", r[c]);
                    }
                }
            }
            if multi && !text.is_empty() {
                text.push('\n');
            }
            text.push_str(&table(rows));
        }
    }
    match output.as_str() {
        "json" | "yaml" => match render_values(values, !a.names.is_empty() && !multi, &output) {
            Ok(s) => ok(s),
            Err(e) => err(e),
        },
        "name" => ok(names.iter().map(|n| format!("{n}\n")).collect()),
        "" | "wide" => {
            if text.is_empty() {
                let where_ = match &ns {
                    Some(n) => format!(" in {n} namespace"),
                    None => String::new(),
                };
                Out { stdout: String::new(), stderr: format!("No resources found{where_}.\n"), code: 0 }
            } else {
                ok(text)
            }
        }
        o => err(format!("error: unable to match a printer suitable for the output format \"{o}\" (the rvlab simulator supports json, yaml, wide, name)")),
    }
}

fn find_pod<'a>(a: &Args, snap: &'a Snapshot, name: &str) -> Result<&'a Pod, String> {
    let ns = a.namespace.clone().unwrap_or("default".into());
    snap.state.pods.get(&format!("{ns}/{name}")).ok_or(format!("Error from server (NotFound): pods \"{name}\" not found"))
}

fn describe(a: &Args, snap: &Snapshot) -> Out {
    if a.resources.first().and_then(|r| canonical(r)) != Some("pods") {
        return err("error: the rvlab simulator describes pods only".into());
    }
    let mut out = String::new();
    for n in &a.names {
        let p = match find_pod(a, snap, n) {
            Ok(p) => p,
            Err(e) => return err(e),
        };
        out.push_str(&format!("Name:             {}\nNamespace:        {}\nNode:             {}\nStatus:           {}\nIP:               {}\nContainers:\n", p.name, p.namespace, p.node, p.phase(), if p.status.sandbox_ready { p.ip.as_str() } else { "" }));
        for (cname, image) in &p.containers {
            let cs = p.status.containers.iter().find(|c| &c.name == cname);
            out.push_str(&format!("  {cname}:\n    Image:          {image}\n"));
            match cs.map(|c| &c.state) {
                Some(CState::Running { started_ms }) => out.push_str(&format!("    State:          Running\n      Started:      {}\n", crate::util::rfc3339(*started_ms))),
                Some(CState::Terminated { reason, exit_code, .. }) => out.push_str(&format!("    State:          Terminated\n      Reason:       {reason}\n      Exit Code:    {exit_code}\n")),
                Some(CState::Waiting { reason, .. }) => out.push_str(&format!("    State:          Waiting\n      Reason:       {reason}\n")),
                None => out.push_str("    State:          Waiting\n      Reason:       ContainerCreating\n"),
            }
            out.push_str(&format!("    Ready:          {}\n    Restart Count:  {}\n", cs.map(|c| c.ready).unwrap_or(false), cs.map(|c| c.restart_count).unwrap_or(0)));
        }
        out.push_str("Events:\n");
        let evs: Vec<_> = snap.state.events.iter().filter(|e| e.object_uid == p.uid).collect();
        if evs.is_empty() {
            out.push_str("  <none>\n");
        } else {
            let mut rows = vec![["Type", "Reason", "Age", "From", "Message"].map(String::from).to_vec(), ["----", "------", "----", "----", "-------"].map(String::from).to_vec()];
            for e in evs {
                let count = if e.count > 1 { format!("{} (x{} over {})", age(snap.now_ms.saturating_sub(e.last_ms)), e.count, age(snap.now_ms.saturating_sub(e.first_ms))) } else { age(snap.now_ms.saturating_sub(e.last_ms)) };
                rows.push(vec![e.type_.clone(), e.reason.clone(), count, e.component.clone(), e.message.clone()]);
            }
            for l in table(rows).lines() {
                out.push_str(&format!("  {l}\n"));
            }
        }
    }
    ok(out)
}

fn logs(a: &Args, snap: &Snapshot) -> Out {
    let Some(target) = a.names.first() else { return err("error: expected 'logs [-f] [-p] (POD | TYPE/NAME) [-c CONTAINER]'.".into()) };
    let name = target.strip_prefix("pod/").unwrap_or(target);
    let p = match find_pod(a, snap, name) {
        Ok(p) => p,
        Err(e) => return err(e),
    };
    let cname = match (&a.container, a.names.get(1)) {
        (Some(c), _) | (None, Some(c)) => c.clone(),
        _ if p.containers.len() == 1 => p.containers[0].0.clone(),
        _ => {
            let all: Vec<&str> = p.containers.iter().map(|c| c.0.as_str()).collect();
            return err(format!("error: a container name must be specified for pod {}, choose one of: [{}]", p.name, all.join(" ")));
        }
    };
    let Some((_, image)) = p.containers.iter().find(|c| c.0 == cname) else {
        return err(format!("error: container {cname} is not valid for pod {}", p.name));
    };
    match p.status.containers.iter().find(|c| c.name == cname).map(|c| (&c.state, c)) {
        Some((CState::Running { started_ms }, c)) | Some((CState::Terminated { started_ms, .. }, c)) => ok(format!(
            "{} rvlab-sim: container {cname} of pod {}/{} started from {image} ({})\n{} rvlab-sim: {cname} is serving\n",
            crate::util::rfc3339(*started_ms),
            p.namespace,
            p.name,
            c.image_id,
            crate::util::rfc3339(*started_ms)
        )),
        Some((CState::Waiting { reason, .. }, _)) if reason == "ErrImagePull" || reason == "ImagePullBackOff" => {
            err(format!("Error from server (BadRequest): container \"{cname}\" in pod \"{}\" is waiting to start: trying and failing to pull image", p.name))
        }
        _ => err(format!("Error from server (BadRequest): container \"{cname}\" in pod \"{}\" is waiting to start: ContainerCreating", p.name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn ages_like_kubectl() {
        assert_eq!(age(5_000), "5s");
        assert_eq!(age(150_000), "2m30s");
        assert_eq!(age(3_600_000 * 5 + 60_000 * 3), "5h3m");
        assert_eq!(age(86_400_000 * 14), "14d");
    }
    #[test]
    fn arg_parsing() {
        let a = parse_args(&["get".into(), "nodes,pods".into(), "-A".into(), "-o".into(), "json".into()]).unwrap();
        assert_eq!(a.resources, vec!["nodes", "pods"]);
        assert!(a.all_namespaces);
        assert_eq!(a.output.as_deref(), Some("json"));
        let a = parse_args(&["-n".into(), "kube-system".into(), "delete".into(), "secret".into(), "x.node-password.k3s".into()]).unwrap();
        assert_eq!((a.verb.as_str(), a.names[0].as_str(), a.namespace.as_deref()), ("delete", "x.node-password.k3s", Some("kube-system")));
        let a = parse_args(&["logs".into(), "-n=kube-system".into(), "coredns-x".into()]).unwrap();
        assert_eq!(a.names, vec!["coredns-x"]);
    }
}
