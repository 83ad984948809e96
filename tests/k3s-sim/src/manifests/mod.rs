//! The manifests directory (/var/lib/rancher/k3s/server/manifests): k3s' packaged addon files
//! for a release (rewritten at every start, skipped with `<file>.skip`, removed when disabled)
//! and parsing of any file there into workloads (Deployment, DaemonSet, Job, Pod, HelmChart,
//! LoadBalancer Service). Owns that directory's content; no network.
use crate::release::Release;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A workload the controllers turn into pods.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WorkloadSpec {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub containers: Vec<(String, String)>,
    #[serde(default)]
    pub init_containers: Vec<(String, String)>,
    /// explicit imagePullPolicy per container name
    #[serde(default)]
    pub pull_policy: BTreeMap<String, String>,
    pub replicas: u32,
    pub labels: BTreeMap<String, String>,
    pub node_name: Option<String>,
    pub node_selector_host: Option<String>,
    /// HelmChart: the image its chart deploys (from valuesContent image.repository/tag)
    pub chart_image: Option<String>,
    /// HelmChart: the job image (spec.jobImage or the release's klipper-helm)
    pub job_image: Option<String>,
    /// LoadBalancer Service / HelmChart with a LoadBalancer service: its ports
    pub lb_ports: Vec<u16>,
    pub restart_policy: String,
    /// the pod template mounts an emptyDir volume (kubectl drain: "local storage")
    #[serde(default)]
    pub empty_dir: bool,
}

/// Packaged addon files: (addon name for --disable, relative path, content).
pub fn packaged(rel: &Release, system_default_registry: Option<&str>) -> Vec<(&'static str, &'static str, String)> {
    let reg = system_default_registry.filter(|r| !r.is_empty()).map(|r| format!("{}/", r.trim_end_matches('/'))).unwrap_or_default();
    let img = |k: &str| format!("{reg}{}", rel.get(k));
    let deploy = |name: &str, label: &str, container: &str, image: String| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  namespace: kube-system\n  labels:\n    {label}\nspec:\n  replicas: 1\n  selector:\n    matchLabels:\n      {label}\n  template:\n    metadata:\n      labels:\n        {label}\n    spec:\n      priorityClassName: system-cluster-critical\n      containers:\n      - name: {container}\n        image: \"{image}\"\n        imagePullPolicy: IfNotPresent\n"
        )
    };
    let traefik_img = rel.get("traefik");
    let (trepo, ttag) = traefik_img.rsplit_once(':').unwrap_or((traefik_img, "latest"));
    vec![
        ("coredns", "coredns.yaml", deploy("coredns", "k8s-app: kube-dns", "coredns", img("coredns"))
            + "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: kube-dns\n  namespace: kube-system\nspec:\n  type: ClusterIP\n  clusterIP: 10.43.0.10\n  ports:\n  - name: dns\n    port: 53\n    protocol: UDP\n"),
        ("local-storage", "local-storage.yaml", deploy("local-path-provisioner", "app: local-path-provisioner", "local-path-provisioner", img("local-storage"))
            + &format!("---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: local-path-config\n  namespace: kube-system\ndata:\n  helperPod.yaml: |-\n    apiVersion: v1\n    kind: Pod\n    metadata:\n      name: helper-pod\n    spec:\n      containers:\n      - name: helper-pod\n        image: \"{}\"\n", img("local-storage-helper"))),
        // as k3s' metrics-server-deployment.yaml: an emptyDir `tmp-dir` mounted at /tmp
        ("metrics-server", "metrics-server/metrics-server-deployment.yaml", deploy("metrics-server", "k8s-app: metrics-server", "metrics-server", img("metrics-server"))
            + "        volumeMounts:\n        - name: tmp-dir\n          mountPath: /tmp\n      volumes:\n      - name: tmp-dir\n        emptyDir: {}\n"),
        ("traefik", "traefik.yaml", format!(
            "apiVersion: helm.cattle.io/v1\nkind: HelmChart\nmetadata:\n  name: traefik-crd\n  namespace: kube-system\nspec:\n  chart: https://%{{KUBERNETES_API}}%/static/charts/traefik-crd.tgz\n---\napiVersion: helm.cattle.io/v1\nkind: HelmChart\nmetadata:\n  name: traefik\n  namespace: kube-system\nspec:\n  chart: https://%{{KUBERNETES_API}}%/static/charts/traefik.tgz\n  set:\n    global.systemDefaultRegistry: \"{}\"\n  valuesContent: |-\n    image:\n      repository: \"{reg}{trepo}\"\n      tag: \"{ttag}\"\n    service:\n      type: LoadBalancer\n    ports:\n      web:\n        exposedPort: 80\n      websecure:\n        exposedPort: 443\n",
            reg.trim_end_matches('/')
        )),
        ("runtimes", "runtimes.yaml", "apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata:\n  name: crun\nhandler: crun\n".to_string()),
        ("", "rolebindings.yaml", "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: kube-apiserver-kubelet-admin\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: system:kubelet-api-admin\nsubjects:\n- apiGroup: rbac.authorization.k8s.io\n  kind: User\n  name: kube-apiserver\n".to_string()),
    ]
}

/// Write packaged files (unless `<file>.skip` exists), remove disabled ones. Returns the relative
/// paths of the disabled ones (their objects are uninstalled by the caller).
pub fn write_packaged(dir: &Path, rel: &Release, sdr: Option<&str>, disabled: &dyn Fn(&str) -> bool) -> std::io::Result<Vec<String>> {
    let mut removed = Vec::new();
    for (addon, relpath, content) in packaged(rel, sdr) {
        let path = dir.join(relpath);
        if !addon.is_empty() && disabled(addon) {
            if path.exists() {
                std::fs::remove_file(&path)?;
            }
            removed.push(relpath.to_string());
            continue;
        }
        if skip_file(&path).exists() {
            continue;
        }
        crate::util::write_file(&path, content.as_bytes(), 0o600)?;
    }
    Ok(removed)
}

fn skip_file(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".skip");
    PathBuf::from(s)
}

/// AddOn name of a manifest file: its file name up to the first period, as k3s's deploy
/// controller names it (`a.b.yaml` is AddOn `a`; docs/k3s-behaviour.md §6.2).
pub fn addon_name(relpath: &str) -> String {
    let base = relpath.rsplit('/').next().unwrap_or(relpath);
    base.split('.').next().unwrap_or(base).to_string()
}

/// All manifest files (recursively), as paths relative to the dir, skipping `.skip`ped ones and
/// hidden files and directories, as k3s's deploy controller does (docs/k3s-behaviour.md §6.1).
pub fn scan(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, d: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if p.is_dir() {
                walk(base, &p, out);
            } else if let Some(n) = p.file_name().and_then(|n| n.to_str())
                && (n.ends_with(".yaml") || n.ends_with(".yml") || n.ends_with(".json")) && !skip_file(&p).exists() {
                    out.push(p.strip_prefix(base).unwrap_or(&p).to_string_lossy().to_string());
                }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn str_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| m.iter().filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string()))).collect())
        .unwrap_or_default()
}

fn containers(pod_spec: &Value, key: &str) -> Vec<(String, String)> {
    pod_spec[key]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| (c["name"].as_str().unwrap_or("app").to_string(), c["image"].as_str().unwrap_or("").to_string()))
        .collect()
}

/// Kubernetes' effective imagePullPolicy: the explicit one, else Always for `:latest` or no tag
/// (and no digest), else IfNotPresent.
pub fn effective_pull_policy(image: &str, explicit: Option<&str>) -> String {
    if let Some(p) = explicit {
        return p.to_string();
    }
    if image.contains('@') {
        return "IfNotPresent".into();
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, "latest")) | None => "Always".into(),
        Some(_) => "IfNotPresent".into(),
    }
}

/// Parse all objects of a manifest file into workloads. Unknown kinds are accepted and ignored.
pub fn parse(text: &str, origin: &str, helm_image: &str) -> Result<Vec<WorkloadSpec>, String> {
    let docs: Vec<Value> = if origin.ends_with(".json") {
        vec![serde_json::from_str(text).map_err(|e| format!("{origin}: {e}"))?]
    } else {
        serde_saphyr::from_multiple(text).map_err(|e| format!("{origin}: {e}"))?
    };
    let mut objects = Vec::new();
    for d in docs {
        if d["kind"].as_str() == Some("List") {
            objects.extend(d["items"].as_array().cloned().unwrap_or_default());
        } else if !d.is_null() {
            objects.push(d);
        }
    }
    let mut out = Vec::new();
    for o in objects {
        let kind = o["kind"].as_str().unwrap_or("").to_string();
        let name = o["metadata"]["name"].as_str().unwrap_or("").to_string();
        if kind.is_empty() || name.is_empty() {
            continue;
        }
        let namespace = o["metadata"]["namespace"].as_str().unwrap_or("default").to_string();
        let mut w = WorkloadSpec {
            kind: kind.clone(),
            namespace,
            name,
            containers: vec![],
            init_containers: vec![],
            pull_policy: BTreeMap::new(),
            replicas: 1,
            labels: BTreeMap::new(),
            node_name: None,
            node_selector_host: None,
            chart_image: None,
            job_image: None,
            lb_ports: vec![],
            restart_policy: "Always".into(),
            empty_dir: false,
        };
        let pod_spec = match kind.as_str() {
            "Deployment" | "DaemonSet" | "Job" | "StatefulSet" | "ReplicaSet" => {
                w.replicas = o["spec"]["replicas"].as_u64().unwrap_or(1) as u32;
                w.labels = str_map(&o["spec"]["template"]["metadata"]["labels"]);
                o["spec"]["template"]["spec"].clone()
            }
            "Pod" => {
                w.labels = str_map(&o["metadata"]["labels"]);
                o["spec"].clone()
            }
            "HelmChart" => {
                w.job_image = Some(o["spec"]["jobImage"].as_str().unwrap_or(helm_image).to_string());
                if let Some(vc) = o["spec"]["valuesContent"].as_str() {
                    let v: Value = serde_saphyr::from_str(vc).unwrap_or(Value::Null);
                    if let Some(repo) = v["image"]["repository"].as_str() {
                        let tag = v["image"]["tag"].as_str().map(str::to_string).or_else(|| v["image"]["tag"].as_f64().map(|f| f.to_string())).unwrap_or("latest".into());
                        w.chart_image = Some(format!("{repo}:{tag}"));
                    }
                    if v["service"]["type"].as_str() == Some("LoadBalancer") {
                        w.lb_ports = vec![80, 443];
                    }
                }
                out.push(w);
                continue;
            }
            "Service" => {
                if o["spec"]["type"].as_str() == Some("LoadBalancer") {
                    w.lb_ports = o["spec"]["ports"].as_array().into_iter().flatten().filter_map(|p| p["port"].as_u64()).map(|p| p as u16).collect();
                    out.push(w);
                }
                continue;
            }
            _ => continue,
        };
        if kind == "StatefulSet" || kind == "ReplicaSet" {
            w.kind = "Deployment".into(); // same pod behaviour for the sim
        }
        w.containers = containers(&pod_spec, "containers");
        w.init_containers = containers(&pod_spec, "initContainers");
        for key in ["containers", "initContainers"] {
            for c in pod_spec[key].as_array().into_iter().flatten() {
                if let (Some(n), Some(p)) = (c["name"].as_str(), c["imagePullPolicy"].as_str()) {
                    w.pull_policy.insert(n.to_string(), p.to_string());
                }
            }
        }
        w.node_name = pod_spec["nodeName"].as_str().map(str::to_string);
        w.node_selector_host = pod_spec["nodeSelector"]["kubernetes.io/hostname"].as_str().map(str::to_string);
        w.empty_dir = pod_spec["volumes"].as_array().into_iter().flatten().any(|v| v.get("emptyDir").is_some());
        w.restart_policy = pod_spec["restartPolicy"].as_str().unwrap_or(if kind == "Job" { "OnFailure" } else { "Always" }).to_string();
        if w.containers.iter().chain(&w.init_containers).any(|(_, i)| i.is_empty()) {
            return Err(format!("{origin}: {kind} {}: container without image", w.name));
        }
        out.push(w);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn packaged_addons_parse_into_the_expected_workloads() {
        let rel = crate::release::for_version("v1.33.4+k3s1");
        let mut all = Vec::new();
        for (_, path, text) in packaged(&rel, None) {
            all.extend(parse(&text, path, rel.get("helm")).unwrap());
        }
        let names: Vec<_> = all.iter().map(|w| format!("{}/{}", w.kind, w.name)).collect();
        assert_eq!(names, vec!["Deployment/coredns", "Deployment/local-path-provisioner", "Deployment/metrics-server", "HelmChart/traefik-crd", "HelmChart/traefik"]);
        assert_eq!(all[0].containers, vec![("coredns".to_string(), "rancher/mirrored-coredns-coredns:1.12.3".to_string())]);
        assert_eq!(all[4].chart_image.as_deref(), Some("rancher/mirrored-library-traefik:3.3.6"));
        assert_eq!(all[4].lb_ports, vec![80, 443]);
        let with_reg = packaged(&rel, Some("127.0.5.1:5000"));
        assert!(with_reg[0].2.contains("image: \"127.0.5.1:5000/rancher/mirrored-coredns-coredns:1.12.3\""));
    }
    #[test]
    fn scan_skips_hidden_files_and_directories_and_skipped_ones() {
        let d = std::env::temp_dir().join(format!("k3s-sim-scan-{}", std::process::id()));
        for f in ["a.yaml", "b.yml", "c.json", "note.txt", ".rvcluster-tmp.12.d.yaml", "e.yaml", "e.yaml.skip", "sub/f.yaml", ".hidden/g.yaml"] {
            let p = d.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "").unwrap();
        }
        let found = scan(&d);
        let _ = std::fs::remove_dir_all(&d);
        assert_eq!(found, ["a.yaml", "b.yml", "c.json", "sub/f.yaml"]);
    }
    #[test]
    fn user_workloads() {
        let y = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: redis\nspec:\n  replicas: 2\n  template:\n    metadata:\n      labels:\n        app: redis\n    spec:\n      containers:\n      - name: redis\n        image: riscv64/redis:latest\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  type: LoadBalancer\n  ports:\n  - port: 8080\n---\napiVersion: batch/v1\nkind: Job\nmetadata:\n  name: once\n  namespace: tools\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: c\n        image: busybox\n";
        let w = parse(y, "app.yaml", "h").unwrap();
        assert_eq!(w.len(), 3);
        assert_eq!(w[0].replicas, 2);
        assert_eq!(w[0].namespace, "default");
        assert_eq!(w[1].lb_ports, vec![8080]);
        assert_eq!(w[2].restart_policy, "Never");
        assert_eq!(addon_name("metrics-server/metrics-server-deployment.yaml"), "metrics-server-deployment");
        assert_eq!(addon_name("custom.local-storage.yaml"), "custom");
        assert_eq!(effective_pull_policy("redis", None), "Always");
        assert_eq!(effective_pull_policy("127.0.0.1:5000/redis", None), "Always");
        assert_eq!(effective_pull_policy("riscv64/redis:latest", None), "Always");
        assert_eq!(effective_pull_policy("riscv64/redis:1.1", None), "IfNotPresent");
        assert_eq!(effective_pull_policy("redis@sha256:00", None), "IfNotPresent");
        assert_eq!(effective_pull_policy("redis", Some("Never")), "Never");
    }
}
