//! The registry host's desired state: a Distribution registry (config.yml, htpasswd, systemd unit,
//! optionally an uploaded binary pinned by sha256). Pure apart from reading local files named in
//! cluster.kdl; the persistent http secret is generated on the host once and never leaves it.

use super::{Content, RenderError, DesiredFile, HostState, Service, text_file, yaml, yaml::Yaml};
use crate::profile::{OsProfile, Step};
use crate::spec::{BinarySource, Registry};

pub const UNIT: &str = "rvcluster-registry";
pub const ETC: &str = "/etc/rvcluster/registry";
pub const UPLOADED_BINARY: &str = "/usr/local/bin/rvcluster-registry";

pub fn config_path() -> String {
    format!("{ETC}/config.yml")
}
pub fn htpasswd_path() -> String {
    format!("{ETC}/htpasswd")
}
pub fn secret_env_path() -> String {
    format!("{ETC}/http-secret.env")
}

/// The binary the unit runs: the pinned upload, or the OS profile's packaged one.
pub fn binary_path(r: &Registry, os: &OsProfile) -> Result<String, RenderError> {
    match (&r.binary, &os.registry_binary) {
        (Some(_), _) => Ok(UPLOADED_BINARY.to_string()),
        (None, Some(p)) => Ok(p.clone()),
        (None, None) => Err(RenderError::NoRegistryBinary { profile: os.name.clone() }),
    }
}

/// Distribution's config.yml (<https://distribution.github.io/distribution/about/configuration/>).
pub fn config_yml(r: &Registry) -> String {
    let mut http = vec![("addr".to_string(), Yaml::str(r.host_port()))];
    if r.tls.enabled {
        http.push((
            "tls".into(),
            Yaml::Map(vec![
                ("certificate".into(), Yaml::str(format!("{ETC}/server.pem"))),
                ("key".into(), Yaml::str(format!("{ETC}/server-key.pem"))),
            ]),
        ));
    }
    let mut doc = vec![
        ("version".to_string(), Yaml::str("0.1")),
        ("log".into(), Yaml::Map(vec![("level".into(), Yaml::str("info"))])),
        (
            "storage".into(),
            Yaml::Map(vec![
                ("filesystem".into(), Yaml::Map(vec![("rootdirectory".into(), Yaml::str(r.storage.clone()))])),
                ("delete".into(), Yaml::Map(vec![("enabled".into(), Yaml::Bool(true))])),
            ]),
        ),
        ("http".into(), Yaml::Map(http)),
    ];
    if r.auth.is_some() {
        doc.push((
            "auth".into(),
            Yaml::Map(vec![(
                "htpasswd".into(),
                Yaml::Map(vec![("realm".into(), Yaml::str("rvcluster")), ("path".into(), Yaml::str(htpasswd_path()))]),
            )]),
        ));
    }
    format!("# managed by rvcluster\n{}", yaml::to_string(&Yaml::Map(doc)))
}

pub fn unit_file(binary: &str) -> String {
    format!(
        "[Unit]
Description=Container image registry for the rvcluster k3s cluster (Distribution)
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
EnvironmentFile={env}
ExecStart={binary} serve {config}
Restart=always
RestartSec=2s

[Install]
WantedBy=multi-user.target
",
        env = secret_env_path(),
        config = config_path()
    )
}

/// The htpasswd line: an existing one is kept when it still verifies the password (bcrypt salts
/// are random, so re-hashing every apply would rewrite the file and restart the registry).
pub fn htpasswd(user: &str, password: &str, existing: Option<&str>) -> Result<String, RenderError> {
    if let Some(ex) = existing {
        for line in ex.lines() {
            if let Some((u, hash)) = line.split_once(':')
                && u == user
                && bcrypt::verify(password, hash).unwrap_or(false)
            {
                return Ok(format!("{line}\n"));
            }
        }
    }
    let hash = bcrypt::hash(password, bcrypt::DEFAULT_COST)?;
    Ok(format!("{user}:{hash}\n"))
}

/// Everything the registry host must have.
pub fn host_state(
    r: &Registry,
    os: &OsProfile,
    password: Option<&str>,
    existing_htpasswd: Option<&str>,
) -> Result<HostState, RenderError> {
    let units = os.path("systemd-units").unwrap_or("/etc/systemd/system");
    let unit_path = format!("{units}/{UNIT}.service");
    let restart = Some(UNIT.to_string());
    let binary = binary_path(r, os)?;
    let mut files = Vec::new();
    if let Some(b) = &r.binary {
        let BinarySource::File(p) = &b.source else {
            return Err(RenderError::RegistryBinaryNotLocal);
        };
        files.push(DesiredFile {
            path: UPLOADED_BINARY.into(),
            content: Content::Local { path: p.clone(), sha256: b.sha256.clone() },
            mode: 0o755,
            owner: "root:root".into(),
            secret: false,
            restarts: restart.clone(),
        });
    }
    files.push(text_file(&config_path(), config_yml(r), 0o644, false, restart.clone()));
    if let Some(a) = &r.auth {
        let pw = password.ok_or(RenderError::NoPassword)?;
        files.push(text_file(&htpasswd_path(), htpasswd(&a.user, pw, existing_htpasswd)?, 0o600, true, restart.clone()));
    }
    if r.tls.enabled
        && let (Some(cert), Some(key)) = (&r.tls.cert, &r.tls.key) {
            let read = |p: &std::path::Path| std::fs::read_to_string(p).map_err(|e| RenderError::Read { path: p.to_path_buf(), source: e });
            files.push(text_file(&format!("{ETC}/server.pem"), read(cert)?, 0o644, false, restart.clone()));
            files.push(text_file(&format!("{ETC}/server-key.pem"), read(key)?, 0o600, true, restart.clone()));
        }
    files.push(text_file(&unit_path, unit_file(&binary), 0o644, false, restart.clone()));
    // The http secret signs upload state; it must persist across restarts, and is made on the host.
    let env = secret_env_path();
    let q = crate::transport::cmd::quote(&env);
    let steps = vec![Step {
        name: "registry http secret".into(),
        when: None,
        check: format!("test -s {q}"),
        run: format!(
            "mkdir -p {etc} && umask 077 && printf 'REGISTRY_HTTP_SECRET=%s\\n' \"$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n')\" > {q}",
            etc = crate::transport::cmd::quote(ETC)
        ),
    }];
    let mut state = HostState {
        node: r.name.clone(),
        files,
        symlinks: vec![],
        service: Service { unit: UNIT.into(), unit_path },
        steps,
        kernel_modules: vec![],
        k3s_version: None,
        // The registry host may fall back to a profile none of whose rules match: no guard.
        detect: vec![],
    };
    // The storage directory must exist before the first start.
    state.steps.push(Step {
        name: format!("registry storage {}", r.storage),
        when: None,
        check: format!("test -d {}", crate::transport::cmd::quote(&r.storage)),
        run: format!("mkdir -p {}", crate::transport::cmd::quote(&r.storage)),
    });
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn htpasswd_is_kept_when_it_still_verifies() {
        let first = htpasswd("rv", "s3cret", None).unwrap();
        assert!(first.starts_with("rv:$2"));
        assert_eq!(htpasswd("rv", "s3cret", Some(&first)).unwrap(), first, "same password: same file");
        assert_ne!(htpasswd("rv", "other", Some(&first)).unwrap(), first, "changed password: new hash");
    }
}
