//! `rvcluster kubeconfig FILE [--merge]`: the server's /etc/rancher/k3s/k3s.yaml with the server
//! address rewritten to the node's and cluster/context/user named after the cluster; printed, or
//! merged into ~/.kube/config (mode 0600, entries of the same name replaced).

use std::path::PathBuf;

use clap::Args;
use serde_json::Value;

use super::{EXIT_FAILED, EXIT_OK, Global, Target, load_cluster};

use crate::output::Output;

#[derive(Args, Debug)]
pub struct KubeconfigArgs {
    #[command(flatten)]
    pub target: Target,
    /// Merge into this kubeconfig instead of printing (default ~/.kube/config).
    #[arg(long, value_name = "PATH", num_args = 0..=1, default_missing_value = "~/.kube/config")]
    pub merge: Option<PathBuf>,
}

/// Rewrites k3s's kubeconfig for use from another machine. Pure.
pub fn rewrite(k3s_yaml: &str, server_address: &str, name: &str) -> Result<Value, String> {
    let mut v: Value = serde_saphyr::from_str(k3s_yaml).map_err(|e| format!("k3s.yaml is not YAML: {e}"))?;
    let host = if server_address.contains(':') { format!("[{server_address}]") } else { server_address.to_string() };
    for (list, inner) in [("clusters", "cluster"), ("contexts", "context"), ("users", "user")] {
        if let Some(items) = v.get_mut(list).and_then(Value::as_array_mut) {
            for it in items {
                it["name"] = Value::String(name.to_string());
                if list == "clusters"
                    && let Some(server) = it[inner]["server"].as_str()
                {
                    let port = server.rsplit(':').next().unwrap_or("6443").to_string();
                    it[inner]["server"] = Value::String(format!("https://{host}:{port}"));
                }
                if list == "contexts" {
                    it[inner]["cluster"] = Value::String(name.to_string());
                    it[inner]["user"] = Value::String(name.to_string());
                }
            }
        }
    }
    v["current-context"] = Value::String(name.to_string());
    Ok(v)
}

/// Merges `new` into `existing`: entries with the same name are replaced, others kept.
pub fn merge(mut existing: Value, new: &Value) -> Value {
    if !existing.is_object() {
        return new.clone();
    }
    for list in ["clusters", "contexts", "users"] {
        let mut items: Vec<Value> = existing[list].as_array().cloned().unwrap_or_default();
        for n in new[list].as_array().cloned().unwrap_or_default() {
            items.retain(|i| i["name"] != n["name"]);
            items.push(n);
        }
        existing[list] = Value::Array(items);
    }
    existing["current-context"] = new["current-context"].clone();
    for k in ["apiVersion", "kind"] {
        if existing.get(k).is_none() {
            existing[k] = new[k].clone();
        }
    }
    existing
}

pub fn run(global: &Global, a: &KubeconfigArgs, out: &Output) -> i32 {
    let (profiles, cluster, _) = match load_cluster(global, &a.target, out) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let Some(server) = cluster.servers().next() else { return EXIT_FAILED };
    let fetched = global.ctx(&cluster, &profiles, false).connect(server).map_err(|e| e.to_string()).and_then(|mut h| {
        use crate::transport::Host;
        let o = h.exec("cat /etc/rancher/k3s/k3s.yaml", None, None).map_err(|e| e.to_string())?;
        if o.success() { Ok(o.stdout_str()) } else { Err(format!("cannot read k3s.yaml: {}", o.stderr_str().trim())) }
    });
    let v = match fetched.and_then(|t| rewrite(&t, &server.address, &cluster.name)) {
        Ok(v) => v,
        Err(e) => {
            out.error(&format!("server {}: {e}", server.name));
            return EXIT_FAILED;
        }
    };
    let Some(path) = &a.merge else {
        print!("{}", serde_saphyr::to_string(&v).unwrap_or_default());
        return EXIT_OK;
    };
    let path = match path.to_str().and_then(|p| p.strip_prefix("~/")) {
        Some(rest) => std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default().join(rest),
        None => path.clone(),
    };
    let existing = std::fs::read_to_string(&path).ok().and_then(|t| serde_saphyr::from_str::<Value>(&t).ok()).unwrap_or(Value::Null);
    let merged = merge(existing, &v);
    let text = serde_saphyr::to_string(&merged).unwrap_or_default();
    let write = || -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)?;
        }
        let tmp = path.with_extension("rvcluster-tmp");
        std::fs::write(&tmp, &text)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&tmp, &path)
    };
    match write() {
        Ok(()) => {
            out.info(&format!("merged context `{}` into {}", cluster.name, path.display()));
            EXIT_OK
        }
        Err(e) => {
            out.error(&format!("cannot write {}: {e}", path.display()));
            EXIT_FAILED
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K3S_YAML: &str = "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: QUJD\n    server: https://127.0.0.1:6443\n  name: default\ncontexts:\n- context:\n    cluster: default\n    user: default\n  name: default\ncurrent-context: default\nkind: Config\npreferences: {}\nusers:\n- name: default\n  user:\n    client-certificate-data: REVG\n    client-key-data: R0hJ\n";

    #[test]
    fn rewrites_server_and_names() {
        let v = rewrite(K3S_YAML, "192.168.173.80", "blog-lab").unwrap();
        assert_eq!(v["clusters"][0]["cluster"]["server"], "https://192.168.173.80:6443");
        assert_eq!(v["clusters"][0]["name"], "blog-lab");
        assert_eq!(v["contexts"][0]["context"]["cluster"], "blog-lab");
        assert_eq!(v["contexts"][0]["context"]["user"], "blog-lab");
        assert_eq!(v["current-context"], "blog-lab");
        assert_eq!(v["users"][0]["user"]["client-key-data"], "R0hJ");
    }

    #[test]
    fn merge_replaces_same_name_and_keeps_others() {
        let mine = rewrite(K3S_YAML, "10.0.0.1", "lab").unwrap();
        let mut other = rewrite(K3S_YAML, "10.0.0.2", "other").unwrap();
        other = merge(other, &mine);
        let again = merge(other, &rewrite(K3S_YAML, "10.0.0.3", "lab").unwrap());
        let names: Vec<&str> = again["clusters"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["other", "lab"]);
        assert_eq!(again["clusters"][1]["cluster"]["server"], "https://10.0.0.3:6443");
        assert_eq!(again["current-context"], "lab");
    }
}
