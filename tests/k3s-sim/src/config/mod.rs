//! k3s configuration as k3s assembles it: /etc/rancher/k3s/config.yaml, then
//! config.yaml.d/*.yaml in alphabetical order (last wins, `key+:` appends to a list), then
//! K3S_* environment variables for keys not set by the files, then CLI flags (which win).
//! Repeatable flags (disable, tls-san, node-label, ...) accumulate and split on commas.
//! Owns config parsing; reads files, writes nothing.
use crate::paths::Paths;
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    One(String),
    Many(Vec<String>),
}

/// Flags that take no value.
const BOOL_FLAGS: &[&str] = &[
    "cluster-init", "disable-default-registry-endpoint", "disable-network-policy", "disable-cloud-controller",
    "disable-kube-proxy", "disable-helm-controller", "disable-scheduler", "disable-apiserver", "disable-etcd",
    "disable-controller-manager", "secrets-encryption", "selinux", "rootless", "prefer-bundled-bin", "docker",
    "debug", "with-node-id", "embedded-registry", "disable-agent", "protect-kernel-defaults", "egress-selector-mode-disabled",
];
/// Flags that may repeat (string slices in k3s).
const LIST_FLAGS: &[&str] = &[
    "disable", "tls-san", "node-label", "node-taint", "kubelet-arg", "kube-apiserver-arg", "kube-proxy-arg",
    "kube-controller-manager-arg", "kube-scheduler-arg", "etcd-arg", "cluster-cidr", "service-cidr", "node-ip",
    "node-external-ip", "image-credential-provider-config",
];
const ENV: &[(&str, &str)] = &[
    ("K3S_URL", "server"),
    ("K3S_TOKEN", "token"),
    ("K3S_TOKEN_FILE", "token-file"),
    ("K3S_NODE_NAME", "node-name"),
    ("K3S_KUBECONFIG_MODE", "write-kubeconfig-mode"),
    ("K3S_KUBECONFIG_OUTPUT", "write-kubeconfig"),
    ("K3S_DATA_DIR", "data-dir"),
    ("K3S_AGENT_TOKEN", "agent-token"),
];

fn is_list(k: &str) -> bool {
    LIST_FLAGS.contains(&k)
}

#[derive(Debug, Clone, Default)]
pub struct Config {
    pub values: BTreeMap<String, Val>,
    /// files read, in order (for logs)
    pub files: Vec<String>,
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',').map(str::trim).filter(|x| !x.is_empty()).map(str::to_string).collect()
}

impl Config {
    fn set_from_yaml(&mut self, key: &str, v: &Value) {
        let (key, append) = match key.strip_suffix('+') {
            Some(k) => (k, true),
            None => (key, false),
        };
        let items: Vec<String> = match v {
            Value::Array(a) => a.iter().filter_map(scalar).collect(),
            other => match scalar(other) {
                Some(s) if is_list(key) => split_list(&s),
                Some(s) => {
                    if append {
                        vec![s]
                    } else {
                        self.values.insert(key.to_string(), Val::One(s));
                        return;
                    }
                }
                None => return,
            },
        };
        if append {
            let mut cur = self.list(key);
            cur.extend(items);
            self.values.insert(key.to_string(), Val::Many(cur));
        } else {
            self.values.insert(key.to_string(), Val::Many(items));
        }
    }

    /// Merge one YAML document (a mapping of flag names).
    pub fn merge_yaml(&mut self, text: &str, origin: &str) -> Result<(), String> {
        if text.trim().is_empty() {
            return Ok(());
        }
        let v: Value = serde_saphyr::from_str(text).map_err(|e| format!("failed to parse {origin}: {e}"))?;
        let Value::Object(map) = v else {
            return Err(format!("failed to parse {origin}: not a mapping"));
        };
        for (k, v) in &map {
            self.set_from_yaml(k, v);
        }
        self.files.push(origin.to_string());
        Ok(())
    }

    /// config.yaml then config.yaml.d/*.yaml (alphabetical).
    pub fn load_files(paths: &Paths) -> Result<Config, String> {
        let mut c = Config::default();
        let main = paths.config_yaml();
        if let Ok(t) = std::fs::read_to_string(&main) {
            c.merge_yaml(&t, "/etc/rancher/k3s/config.yaml")?;
        }
        if let Ok(rd) = std::fs::read_dir(paths.config_d()) {
            let mut names: Vec<_> = rd
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
                .collect();
            names.sort();
            for n in names {
                let t = std::fs::read_to_string(paths.config_d().join(&n)).map_err(|e| e.to_string())?;
                c.merge_yaml(&t, &format!("/etc/rancher/k3s/config.yaml.d/{n}"))?;
            }
        }
        Ok(c)
    }

    /// Environment (K3S_URL, K3S_TOKEN, ...) fills keys the files did not set.
    pub fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) {
        for (var, key) in ENV {
            if let Some(v) = env(var).filter(|v| !v.is_empty()) {
                self.values.entry(key.to_string()).or_insert(Val::One(v));
            }
        }
    }

    /// CLI flags win over files and env; repeatable flags accumulate after the files' values.
    pub fn apply_args(&mut self, args: &[String]) -> Result<Vec<String>, String> {
        let mut positional = Vec::new();
        let mut cli: BTreeMap<String, Val> = BTreeMap::new();
        let mut i = 0;
        while i < args.len() {
            let a = &args[i];
            i += 1;
            let Some(flag) = a.strip_prefix("--").or_else(|| a.strip_prefix('-').filter(|f| f.len() == 1)) else {
                positional.push(a.clone());
                continue;
            };
            let flag = match flag {
                "t" => "token",
                "s" => "server",
                "c" => "config",
                "o" => "write-kubeconfig",
                f => f,
            };
            let (name, value) = match flag.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (flag.to_string(), None),
            };
            if BOOL_FLAGS.contains(&name.as_str()) {
                cli.insert(name, Val::One(value.unwrap_or_else(|| "true".into())));
                continue;
            }
            let value = match value {
                Some(v) => v,
                None => {
                    let v = args.get(i).cloned().ok_or(format!("flag needs an argument: --{name}"))?;
                    i += 1;
                    v
                }
            };
            if is_list(&name) {
                let mut cur = match cli.remove(&name) {
                    Some(Val::Many(v)) => v,
                    _ => Vec::new(),
                };
                cur.extend(split_list(&value));
                cli.insert(name, Val::Many(cur));
            } else {
                cli.insert(name, Val::One(value));
            }
        }
        for (k, v) in cli {
            match v {
                Val::Many(items) => {
                    let mut cur = self.list(&k);
                    cur.extend(items);
                    self.values.insert(k, Val::Many(cur));
                }
                one => {
                    self.values.insert(k, one);
                }
            }
        }
        Ok(positional)
    }

    pub fn get(&self, key: &str) -> Option<String> {
        match self.values.get(key)? {
            Val::One(s) => Some(s.clone()),
            Val::Many(v) => v.last().cloned(),
        }
    }
    pub fn list(&self, key: &str) -> Vec<String> {
        match self.values.get(key) {
            Some(Val::One(s)) => split_list(s),
            Some(Val::Many(v)) => v.clone(),
            None => Vec::new(),
        }
    }
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key).as_deref(), Some("true") | Some("1") | Some("yes"))
    }
    pub fn disabled(&self, addon: &str) -> bool {
        self.list("disable").iter().any(|d| d == addon)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn drop_ins_last_wins_and_plus_appends() {
        let mut c = Config::default();
        c.merge_yaml("disable: [traefik]\nnode-name: a\nwrite-kubeconfig-mode: \"0600\"\n", "main").unwrap();
        c.merge_yaml("node-name: b\ndisable+: [servicelb]\n", "10-x").unwrap();
        c.merge_yaml("node-name: c\ntls-san: 127.0.3.1,lab\n", "20-y").unwrap();
        assert_eq!(c.get("node-name").as_deref(), Some("c"));
        assert_eq!(c.list("disable"), vec!["traefik", "servicelb"]);
        assert_eq!(c.list("tls-san"), vec!["127.0.3.1", "lab"]);
        c.merge_yaml("disable: metrics-server\n", "30-z").unwrap();
        assert_eq!(c.list("disable"), vec!["metrics-server"]);
    }
    #[test]
    fn cli_wins_env_fills_gaps() {
        let mut c = Config::default();
        c.merge_yaml("token: from-file\ndisable: [traefik]\n", "main").unwrap();
        c.apply_env(&|k| match k {
            "K3S_URL" => Some("https://127.0.3.1:6443".into()),
            "K3S_TOKEN" => Some("from-env".into()),
            _ => None,
        });
        let pos = c
            .apply_args(&["--disable=servicelb,local-storage".into(), "--node-name".into(), "x".into(), "--disable-default-registry-endpoint".into(), "extra".into()])
            .unwrap();
        assert_eq!(pos, vec!["extra"]);
        assert_eq!(c.get("token").as_deref(), Some("from-file"));
        assert_eq!(c.get("server").as_deref(), Some("https://127.0.3.1:6443"));
        assert_eq!(c.list("disable"), vec!["traefik", "servicelb", "local-storage"]);
        assert!(c.flag("disable-default-registry-endpoint"));
        assert!(c.apply_args(&["--token".into()]).is_err());
    }
}
