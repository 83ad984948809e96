//! Adapters from the cluster.kdl model (`spec`) to this module's inputs: the mirror view the
//! boards will have, image sources, client options, and the push items for `image` entries
//! (each sent to the repository containerd will look up). Reads secrets; no network.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::client::{ClientOptions, Credentials};
use super::push::PushItem;
use super::resolve::{self, MirrorConfig, MirrorEntry, Rewrite};
use super::source::{self, RemoteSources, Source};
use super::error::RegistryError;
use crate::spec::{Cluster, ImageSource, Registry};

/// The mirrors the boards get: for each `mirror` of the registry, our registry's endpoint first,
/// then its extra endpoints, with its rewrites; `upstream` entries become upstream overrides.
pub fn mirror_config(cluster: &Cluster) -> Result<MirrorConfig, String> {
    let mut cfg = MirrorConfig::default();
    if let Some(reg) = &cluster.registry {
        for m in &reg.mirrors {
            let mut endpoints = vec![reg.endpoint()];
            endpoints.extend(m.extra_endpoints.iter().cloned());
            let rewrites = m
                .rewrites
                .iter()
                .map(|r| Rewrite::new(&r.pattern, &r.replacement).map_err(|e| format!("rewrite `{}`: {e}", r.pattern)))
                .collect::<Result<Vec<_>, _>>()?;
            cfg.mirrors.push(MirrorEntry { registry: m.registry.clone(), endpoints, rewrites });
        }
    }
    cfg.upstream_overrides = upstream_overrides(cluster);
    Ok(cfg)
}

fn upstream_overrides(cluster: &Cluster) -> BTreeMap<String, String> {
    cluster.upstreams.iter().map(|u| (u.registry.clone(), u.endpoint.clone())).collect()
}

/// Where `docker://` sources are fetched from (the same `upstream` overrides).
pub fn remote_sources(cluster: &Cluster) -> RemoteSources {
    RemoteSources { upstream_overrides: upstream_overrides(cluster), options: BTreeMap::new() }
}

pub fn source_of(s: &ImageSource) -> Source {
    match s {
        ImageSource::OciArchive(p) => Source::OciArchive(p.clone()),
        ImageSource::OciDir(p) => Source::OciDir(p.clone()),
        ImageSource::DockerArchive(p) => Source::DockerArchive(p.clone()),
        ImageSource::Docker(r) => Source::Docker(r.clone()),
    }
}

/// Client options for our registry: credentials from the auth secret, the CA file to trust
/// (`tls ca=...`, or the one rvcluster generated, passed as `generated_ca`).
pub fn client_options(reg: &Registry, generated_ca: Option<PathBuf>) -> Result<ClientOptions, String> {
    let credentials = match &reg.auth {
        Some(a) => Some(Credentials { username: a.user.clone(), password: a.password.read()? }),
        None => None,
    };
    let ca_file = if reg.tls.enabled { reg.tls.ca.clone().or(generated_ca) } else { None };
    Ok(ClientOptions { ca_file, credentials, ..Default::default() })
}

/// Loads every `image` entry and pairs it with the repository and tag the boards will look up
/// on our registry. `locked` maps a normalized reference to its pinned riscv64 manifest digest.
pub fn push_items(
    cluster: &Cluster,
    mirrors: &MirrorConfig,
    locked: &BTreeMap<String, String>,
) -> Result<Vec<PushItem>, RegistryError> {
    let Some(reg) = &cluster.registry else { return Ok(Vec::new()) };
    let remote = remote_sources(cluster);
    let mut items = Vec::new();
    for img in &cluster.images {
        let name = img.reference.to_string();
        let Some(dest) = resolve::destination(mirrors, &img.reference, &reg.endpoint()) else {
            return Err(RegistryError::BadSource {
                source_desc: img.source.describe(),
                reason: format!(
                    "the boards never look up {name} in the registry {}: add a `mirror \"{}\"` to the registry",
                    reg.host_port(),
                    img.reference.registry
                ),
            });
        };
        let image = source::load_pinned(&source_of(&img.source), &remote, locked.get(&name).map(String::as_str))?;
        items.push(PushItem {
            name: name.clone(),
            image,
            repository: dest.repository,
            tag: img.reference.tag.clone(),
            locked_manifest_digest: locked.get(&name).cloned(),
        });
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Profiles;

    fn blog_lab() -> Cluster {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/blog-lab.kdl");
        crate::spec::load(&path, &Profiles::builtin()).unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[test]
    fn blog_lab_mirrors_and_destinations() {
        let c = blog_lab();
        let m = mirror_config(&c).unwrap();
        let shown: Vec<String> = resolve::attempts(&m, &"docker.io/rancher/local-path-provisioner:v0.0.31".parse_ref())
            .iter()
            .map(|a| format!("{} {}", a.endpoint, a.display()))
            .collect();
        assert_eq!(
            shown,
            vec![
                "http://192.168.173.76:6000 192.168.173.76:6000/riscv64/local-path-provisioner:v0.0.31",
                "https://registry-1.docker.io registry-1.docker.io/rancher/local-path-provisioner:v0.0.31",
            ]
        );
        let reg = c.registry.as_ref().unwrap();
        let dests: Vec<String> = c
            .images
            .iter()
            .map(|i| resolve::destination(&m, &i.reference, &reg.endpoint()).map(|a| a.display()).unwrap_or_default())
            .collect();
        assert_eq!(
            dests,
            vec![
                "192.168.173.76:6000/riscv64/local-path-provisioner:v0.0.31",
                "192.168.173.76:6000/riscv64/redis:1.1",
                "192.168.173.76:6000/riscv64/nginx:1.1",
                "192.168.173.76:6000/riscv64/busybox:1",
            ]
        );
        assert_eq!(source_of(&c.images[3].source).describe(), "docker://docker.io/library/busybox:1.37.0");
        let opts = client_options(reg, Some("/ca.pem".into())).unwrap();
        assert_eq!(opts.credentials.as_ref().map(|c| c.username.as_str()), Some("rv"));
        assert!(!opts.credentials.unwrap().password.is_empty());
        assert_eq!(opts.ca_file, None, "plain HTTP registry: no CA");
    }

    trait ParseRef {
        fn parse_ref(&self) -> crate::spec::reference::ImageRef;
    }
    impl ParseRef for str {
        fn parse_ref(&self) -> crate::spec::reference::ImageRef {
            crate::spec::reference::ImageRef::parse(self).unwrap()
        }
    }
}
