//! What the strings of cluster.kdl may contain where they reach a host: a login name, a
//! Kubernetes label or taint, a URL in registries.yaml, a user in htpasswd, an environment
//! variable name. Each check answers `Err(what is allowed)`; the loader turns that into a located
//! problem. Values that only need quoting (paths, config values) are not checked here: the shell
//! and YAML writers quote them (tests/hostile_values.rs drives both with hostile strings).

use std::sync::LazyLock;

use regex::Regex;

static USER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[A-Za-z0-9_][A-Za-z0-9._-]*\$?$").unwrap());
static LABEL_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$").unwrap());
static DNS_SUBDOMAIN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$").unwrap());
static ENV_NAME: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[A-Za-z_][A-Za-z0-9_]*$").unwrap());
static TAG: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[A-Za-z0-9][A-Za-z0-9._-]*$").unwrap());

/// A value as shown in a message: control characters escaped (`\n`), everything else as written.
pub fn shown(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

/// What a value may hold, when it holds something else (the loader puts this text in a located
/// problem or its help).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("a user name is ASCII letters, digits, `.`, `_` and `-` (not first), at most 32 characters")]
    SshUser,
    #[error("a tag is ASCII letters, digits, `.`, `_` and `-` (starting with a letter or digit), at most 63 characters")]
    Tag,
    #[error("the key prefix `{}` must be a DNS subdomain (lowercase ASCII letters, digits, `-`, `.`)", shown(.0))]
    KeyPrefix(String),
    #[error("the key name `{}` must be 1-63 ASCII letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit", shown(.0))]
    KeyName(String),
    #[error("the value `{}` must be at most 63 ASCII letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit", shown(.0))]
    LabelValue(String),
    #[error("a node label is `key=value`")]
    LabelForm,
    #[error("a node taint is `key=value:Effect` (Effect: NoSchedule, PreferNoSchedule or NoExecute)")]
    TaintForm,
    #[error("the effect `{}` must be NoSchedule, PreferNoSchedule or NoExecute", shown(.0))]
    TaintEffect(String),
    #[error("a URL starts with http:// or https://")]
    UrlScheme,
    #[error("the URL has no host")]
    UrlNoHost,
    #[error("{} is not allowed in a URL (percent-encode it)", if .0.is_whitespace() || .0.is_control() { format!("{:?}", .0) } else { format!("`{}`", .0) })]
    UrlChar(char),
    #[error("a registry user is printable ASCII without spaces or `:` (htpasswd writes `user:hash`)")]
    HtpasswdUser,
    #[error("an environment variable name is letters, digits and `_`, not starting with a digit")]
    EnvName,
    #[error("{0:?} (a control character) is not allowed in a path")]
    PathControl(char),
}

/// A login name for SSH (POSIX portable names, as useradd accepts them).
pub fn ssh_user(u: &str) -> Result<(), ValueError> {
    if USER.is_match(u) && u.len() <= 32 {
        Ok(())
    } else {
        Err(ValueError::SshUser)
    }
}

/// A tag for `--on @TAG`.
pub fn tag(t: &str) -> Result<(), ValueError> {
    if TAG.is_match(t) && t.len() <= 63 {
        Ok(())
    } else {
        Err(ValueError::Tag)
    }
}

/// A label key: `[prefix/]name`, prefix a DNS subdomain (253), name up to 63 characters.
fn label_key(k: &str) -> Result<(), ValueError> {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix
        && (p.is_empty() || p.len() > 253 || !DNS_SUBDOMAIN.is_match(p))
    {
        return Err(ValueError::KeyPrefix(p.to_string()));
    }
    if name.len() > 63 || !LABEL_NAME.is_match(name) {
        return Err(ValueError::KeyName(name.to_string()));
    }
    Ok(())
}

fn label_value(v: &str) -> Result<(), ValueError> {
    if v.is_empty() || (v.len() <= 63 && LABEL_NAME.is_match(v)) {
        Ok(())
    } else {
        Err(ValueError::LabelValue(v.to_string()))
    }
}

/// A `node-label` value, `key=value` (Kubernetes label syntax; k3s refuses the node otherwise).
pub fn node_label(s: &str) -> Result<(), ValueError> {
    let Some((k, v)) = s.split_once('=') else {
        return Err(ValueError::LabelForm);
    };
    label_key(k)?;
    label_value(v)
}

/// A `node-taint` value, `key[=value]:Effect`.
pub fn node_taint(s: &str) -> Result<(), ValueError> {
    let Some((kv, effect)) = s.rsplit_once(':') else {
        return Err(ValueError::TaintForm);
    };
    if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect) {
        return Err(ValueError::TaintEffect(effect.to_string()));
    }
    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
    label_key(k)?;
    label_value(v)
}

/// An http(s) URL as containerd and rvcluster read it: a host, and only characters URLs allow.
pub fn url(u: &str) -> Result<(), ValueError> {
    let rest = u.strip_prefix("https://").or_else(|| u.strip_prefix("http://"));
    let Some(rest) = rest else { return Err(ValueError::UrlScheme) };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit_once('@').map(|(_, h)| h).unwrap_or(host);
    if host.is_empty() || host.starts_with(':') {
        return Err(ValueError::UrlNoHost);
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-._~:/?#[]@!$&'()*+,;=%".contains(c);
    if let Some(c) = rest.chars().find(|c| !allowed(*c)) {
        return Err(ValueError::UrlChar(c));
    }
    Ok(())
}

/// The registry user: written into htpasswd as `user:hash`, one per line.
pub fn htpasswd_user(u: &str) -> Result<(), ValueError> {
    if !u.is_empty() && u.chars().all(|c| c.is_ascii_graphic() && c != ':') {
        Ok(())
    } else {
        Err(ValueError::HtpasswdUser)
    }
}

/// An environment variable name (`password-env=`).
pub fn env_name(v: &str) -> Result<(), ValueError> {
    if ENV_NAME.is_match(v) {
        Ok(())
    } else {
        Err(ValueError::EnvName)
    }
}

/// A path on a host: anything a file name may hold (it is quoted), but no control characters.
pub fn host_path(p: &str) -> Result<(), ValueError> {
    match p.chars().find(|c| c.is_control()) {
        Some(c) => Err(ValueError::PathControl(c)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users() {
        for ok in ["root", "lutao", "ci_bot", "a.b-c", "machine$"] {
            assert!(ssh_user(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-oProxyCommand=x", "root user", "r$(id)", "root\n", "ünï", "a:b", &"a".repeat(33)] {
            assert!(ssh_user(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn labels_and_taints() {
        for ok in ["board=lpi4a", "disk=", "example.com/rack=r1", "kubernetes.io/arch=riscv64", "a_b.c=X-1"] {
            assert!(node_label(ok).is_ok(), "{ok}");
        }
        for (bad, says) in [
            ("board", "key=value"),
            ("board=lpi 4a", "the value `lpi 4a`"),
            ("rack=`id`", "the value"),
            ("Example.com/rack=1", "the key prefix"),
            ("=x", "the key name"),
            ("b\u{f6}ard=x", "the key name"),
            ("a=$(reboot)", "the value"),
        ] {
            let e = node_label(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
        assert!(node_taint("dedicated=gpu:NoSchedule").is_ok());
        assert!(node_taint("spot:PreferNoSchedule").is_ok());
        assert!(node_taint("dedicated=gpu:Sometimes").unwrap_err().to_string().contains("effect"));
        assert!(node_taint("dedicated=gpu").is_err());
    }

    #[test]
    fn urls() {
        for ok in ["https://mirror.example.org", "http://10.0.0.9:5000/v2", "https://[::1]:5000", "https://u@h/p?q=1"] {
            assert!(url(ok).is_ok(), "{ok}");
        }
        for bad in ["ftp://x", "https://", "https://mirror example.org", "https://x/\"y", "https://x/\n", "https://\u{e9}.org", "https://:80"] {
            assert!(url(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn others() {
        assert!(tag("rack1").is_ok() && tag("lpi4a.v2_b-c").is_ok());
        for bad in ["", "rack 1", "$(id)", "`id`", "a,b", "@x", "\u{fc}ber", "-x"] {
            assert!(tag(bad).is_err(), "{bad:?}");
        }
        assert!(htpasswd_user("rv").is_ok() && htpasswd_user("rv:x").is_err() && htpasswd_user("r v").is_err());
        assert!(env_name("REGISTRY_PW").is_ok() && env_name("A B").is_err() && env_name("1X").is_err());
        assert!(host_path("/var/lib/my registry/$(x)").is_ok() && host_path("/var/lib/a\nb").is_err());
    }
}
