//! The cluster's images: which images the cluster will pull (release images minus disabled
//! addons, pause, custom manifests' images, `image` entries), the mirror configuration the boards
//! will use (the same one render writes to registries.yaml), and the push of the `image` entries
//! to where the mirror makes containerd look. Glue between spec and the registry client; holds no
//! HTTP code itself.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use regex::Regex;

use crate::profile::Profiles;
use crate::registry::client::{ClientOptions, Credentials, RegistryClient};
use crate::registry::closure::{self, ClosureReport, EndpointOptions, Need, NeededBy};
use crate::registry::push::{self, PushItem, PushPlan};
use crate::registry::resolve::{self, MirrorConfig, MirrorEntry, Rewrite};
use crate::registry::source::{self, RemoteSources, Source};
use crate::spec::reference::ImageRef;
use crate::spec::{Cluster, Image, ImageSource};

/// The mirrors exactly as registries.yaml declares them (render::registries_yaml).
pub fn mirror_config(c: &Cluster) -> MirrorConfig {
    let mut cfg = MirrorConfig::default();
    for u in &c.upstreams {
        cfg.upstream_overrides.insert(u.registry.clone(), u.endpoint.clone());
    }
    let Some(r) = &c.registry else { return cfg };
    for m in &r.mirrors {
        let mut endpoints = vec![r.endpoint()];
        endpoints.extend(m.extra_endpoints.iter().cloned());
        let rewrites = m.rewrites.iter().filter_map(|w| Rewrite::new(&w.pattern, &w.replacement).ok()).collect();
        cfg.mirrors.push(MirrorEntry { registry: m.registry.clone(), endpoints, rewrites });
    }
    if !r.mirrors.iter().any(|m| m.registry == r.host_port()) {
        cfg.mirrors.push(MirrorEntry { registry: r.host_port(), endpoints: vec![r.endpoint()], rewrites: vec![] });
    }
    cfg
}

static IMAGE_LINE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"(?m)^\s*(?:-\s+)?image:\s*["']?([^"'\s#]+)["']?\s*(?:#.*)?$"#).unwrap());

/// Container images named in a Kubernetes manifest (every `image:` field, any kind, any depth).
pub fn manifest_images(text: &str) -> Vec<String> {
    let mut v: Vec<String> = IMAGE_LINE.captures_iter(text).map(|c| c[1].to_string()).collect();
    v.dedup();
    v
}

/// Every image the cluster's pods will pull, each with who needs it.
pub fn needs(c: &Cluster, profiles: &Profiles) -> Vec<Need> {
    let mut out: Vec<Need> = Vec::new();
    let mut add = |image: ImageRef, by: NeededBy| match out.iter_mut().find(|n| n.image == image) {
        Some(n) => {
            if !n.needed_by.contains(&by) {
                n.needed_by.push(by)
            }
        }
        None => out.push(Need { image, needed_by: vec![by] }),
    };
    if let Some(rel) = profiles.release(&c.k3s.version) {
        add(rel.pause.clone(), NeededBy::Pause);
        let disabled: Vec<&str> = c.k3s.disable.iter().map(|d| d.value.as_str()).collect();
        for a in rel.addons.iter().filter(|a| !disabled.contains(&a.name.as_str())) {
            for i in &a.images {
                add(i.clone(), NeededBy::Addon(a.name.clone()));
            }
        }
    }
    for m in &c.k3s.manifests {
        let name = m.value.file_name().map(|f| f.to_string_lossy().to_string()).unwrap_or_default();
        let text = std::fs::read_to_string(&m.value).unwrap_or_default();
        for i in manifest_images(&text) {
            if let Ok(r) = ImageRef::parse(&i) {
                add(r, NeededBy::Manifest(name.clone()));
            }
        }
    }
    for i in &c.images {
        add(i.reference.clone(), NeededBy::ImageEntry(i.reference.to_string()));
    }
    out
}

/// Client options for our registry (credentials, CA).
pub fn registry_options(c: &Cluster, password: Option<&str>) -> ClientOptions {
    let mut o = ClientOptions::default();
    if let Some(r) = &c.registry {
        o.ca_file = r.tls.ca.clone();
        if let (Some(a), Some(pw)) = (&r.auth, password) {
            o.credentials = Some(Credentials { username: a.user.clone(), password: pw.to_string() });
        }
    }
    o
}

/// The closure check: where each needed image will come from, or that it is missing.
pub fn closure(c: &Cluster, profiles: &Profiles, password: Option<&str>) -> ClosureReport {
    check(c, profiles, &needs(c, profiles), password)
}

/// Resolves `needs` through the cluster's mirrors, with the cluster's `image` entries as provided
/// and our registry reached with its credentials and CA; a missing image with a known substitute
/// (profiles/substitutes.kdl) gets it offered, checked upstream.
fn check(c: &Cluster, profiles: &Profiles, needs: &[Need], password: Option<&str>) -> ClosureReport {
    let provided: BTreeMap<String, String> =
        c.images.iter().map(|i| (i.reference.to_string(), i.source.describe())).collect();
    let mut opts = EndpointOptions::new();
    if let Some(r) = &c.registry {
        opts.insert(resolve::normalize_endpoint(&r.endpoint()), registry_options(c, password));
    }
    let mirrors = mirror_config(c);
    let mut report = closure::check(needs, &provided, &mirrors, &opts);
    let known: Vec<closure::Known> = profiles
        .substitutes
        .iter()
        .map(|s| closure::Known { image: s.image.clone(), with: s.with.clone(), checked: s.checked.clone(), note: s.note.clone() })
        .collect();
    closure::offer_substitutes(&mut report, &known, &mirrors, &opts);
    report
}

/// Why one image cannot be pulled, in the cluster's terms: every place containerd tries (mirror
/// endpoints with rewrites, then upstream), what each answered, and the fix.
pub fn explain(c: &Cluster, profiles: &Profiles, password: Option<&str>, image: &str) -> String {
    let Ok(r) = ImageRef::parse(image) else { return format!("`{image}` is not a valid image reference") };
    let need = needs(c, profiles).into_iter().find(|n| n.image == r).unwrap_or(Need { image: r, needed_by: vec![] });
    check(c, profiles, &[need], password).render()
}

/// Where `docker://` sources (and build bases) are fetched from: the cluster's `upstream` entries.
pub fn remote_sources(c: &Cluster) -> RemoteSources {
    RemoteSources { upstream_overrides: mirror_config(c).upstream_overrides, options: BTreeMap::new() }
}

/// The source an image entry pushes from. A built image is its archive in the build cache
/// (built now when the cache does not have its inputs yet), so it pushes like `oci-archive:`.
fn to_source(c: &Cluster, i: &Image, remote: &RemoteSources) -> Result<Source, String> {
    Ok(match &i.source {
        ImageSource::OciArchive(p) => Source::OciArchive(p.clone()),
        ImageSource::OciDir(p) => Source::OciDir(p.clone()),
        ImageSource::DockerArchive(p) => Source::DockerArchive(p.clone()),
        ImageSource::Docker(r) => Source::Docker(r.clone()),
        ImageSource::Build(_) => {
            let built = crate::build::build(c, i, &crate::build::Options { remote, rebuild: false }).map_err(|e| e.to_string())?;
            Source::OciArchive(built.archive)
        }
    })
}

/// Loads every `image` entry and says where it goes in the private registry.
pub fn push_items(c: &Cluster, locked: &BTreeMap<String, String>) -> Result<Vec<PushItem>, String> {
    let Some(r) = &c.registry else { return Ok(vec![]) };
    let cfg = mirror_config(c);
    let remote = remote_sources(c);
    let mut items = Vec::new();
    for i in &c.images {
        let dest = resolve::destination(&cfg, &i.reference, &r.endpoint()).ok_or_else(|| {
            format!(
                "image {}: no mirror sends containerd to the registry {} for it (add `mirror \"{}\"` to the registry block)",
                i.reference,
                r.endpoint(),
                i.reference.registry
            )
        })?;
        // docker:// sources are fetched by the locked digest when cluster.lock pins one.
        let pinned = locked.get(&i.reference.to_string()).map(String::as_str);
        let src = to_source(c, i, &remote)?;
        let image = source::load_pinned(&src, &remote, pinned).map_err(|e| format!("image {}: {e}", i.reference))?;
        items.push(PushItem {
            name: i.reference.to_string(),
            image,
            repository: dest.repository.clone(),
            tag: i.reference.tag.clone(),
            locked_manifest_digest: locked.get(&i.reference.to_string()).cloned(),
        });
    }
    Ok(items)
}

/// What each `image` entry resolves to now (for cluster.lock), loading every source.
pub fn resolved(c: &Cluster) -> Result<BTreeMap<String, crate::lock::LockedImage>, String> {
    Ok(push_items(c, &BTreeMap::new())?
        .into_iter()
        .map(|i| {
            let source = c
                .images
                .iter()
                .find(|x| x.reference.to_string() == i.name)
                .map(|x| {
                    let d = x.source.describe();
                    d.replace(&format!("{}/", c.base_dir.display()), "")
                })
                .unwrap_or_default();
            (
                i.name.clone(),
                crate::lock::LockedImage {
                    manifest: i.image.manifest_digest.clone(),
                    index: i.image.index_digest.clone(),
                    repository: i.repository.clone(),
                    source,
                },
            )
        })
        .collect())
}

pub fn client(c: &Cluster, password: Option<&str>) -> Result<Option<RegistryClient>, String> {
    let Some(r) = &c.registry else { return Ok(None) };
    RegistryClient::new(&r.endpoint(), registry_options(c, password)).map(Some).map_err(|e| e.to_string())
}

/// Plan (dry) or push (wet) the `image` entries; progress goes to `events` (src/output draws it).
pub fn push_images(
    c: &Cluster,
    password: Option<&str>,
    wet: bool,
    locked: &BTreeMap<String, String>,
    known_repos: &[String],
    events: &dyn crate::event::PushSink,
) -> Result<(PushPlan, Option<push::PushReport>), String> {
    let Some(client) = client(c, password)? else {
        return Err("no registry block".into());
    };
    let items = push_items(c, locked)?;
    // Repositories the registry already holds (from cluster.lock): their blobs can be mounted.
    let known: Vec<String> = known_repos.to_vec();
    let plan = push::plan(&client, &items, &known).map_err(|e| e.to_string())?;
    if !wet {
        return Ok((plan, None));
    }
    let report = push::push(&client, &items, &plan, events).map_err(|e| e.to_string())?;
    Ok((plan, Some(report)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_images_in_manifests() {
        let t = "spec:\n  containers:\n    - name: a\n      image: docker.io/rancher/local-path-provisioner:v0.0.31\n    - image: \"riscv64/busybox:1\" # helper\n      name: b\n  x:\n    image: 'redis'\n";
        assert_eq!(manifest_images(t), ["docker.io/rancher/local-path-provisioner:v0.0.31", "riscv64/busybox:1", "redis"]);
    }
}
