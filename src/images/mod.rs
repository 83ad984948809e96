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
use crate::registry::closure::{self, ClosureReport, EndpointOptions, FixDelivery, Need, NeededBy};
use crate::registry::push::{self, PushItem, PushPlan};
use crate::registry::resolve::{self, MirrorConfig, MirrorEntry, Rewrite};
use crate::registry::source::{self, RemoteSources, Source};
use crate::spec::reference::ImageRef;
use crate::render::airgap::Tarball;
use crate::spec::{Cluster, Deliver, Image, ImageSource};

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
    // Provided means provided whichever way it travels: pushed, or a tarball on every node.
    let provided: BTreeMap<String, String> = c
        .images
        .iter()
        .map(|i| {
            let how = match (i.deliver, &c.registry) {
                (Deliver::Tarball, _) => "delivered as a tarball to every node".to_string(),
                (Deliver::Registry, Some(r)) => format!("pushed to the registry {}", r.name),
                (Deliver::Registry, None) => "pushed to the registry".to_string(),
            };
            (i.reference.to_string(), format!("{}, {how}", i.source.describe()))
        })
        .collect();
    let mut opts = EndpointOptions::new();
    if let Some(r) = &c.registry {
        opts.insert(resolve::normalize_endpoint(&r.endpoint()), registry_options(c, password));
    }
    let mirrors = mirror_config(c);
    let mut report = closure::check(needs, &provided, &mirrors, &opts);
    report.delivery = if c.registry.is_some() { FixDelivery::Registry } else { FixDelivery::Tarball };
    let known: Vec<closure::Known> = profiles
        .substitutes
        .iter()
        .map(|s| closure::Known { image: s.image.clone(), with: s.with.clone(), checked: s.checked.clone(), note: s.note.clone() })
        .collect();
    closure::offer_substitutes(&mut report, &known, &mirrors, &opts);
    report
}

/// Why one image cannot be pulled, in the cluster's terms: every place containerd tries (mirror
/// endpoints with rewrites, then upstream), what each answered, and the fix. For an image that
/// cluster.kdl provides, what to look at on the node instead (the way it travels).
pub fn explain(c: &Cluster, profiles: &Profiles, password: Option<&str>, image: &str) -> String {
    let Ok(r) = ImageRef::parse(image) else { return format!("`{image}` is not a valid image reference") };
    let need = needs(c, profiles).into_iter().find(|n| n.image == r).unwrap_or(Need { image: r.clone(), needed_by: vec![] });
    let mut text = check(c, profiles, &[need], password).render();
    if let Some(i) = c.images.iter().find(|i| i.reference == r) {
        text.push_str(&provided_hint(c, i));
    }
    text
}

/// What to check when an image cluster.kdl provides still fails to start on a node.
fn provided_hint(c: &Cluster, i: &crate::spec::Image) -> String {
    let always = i.reference.tag.as_deref() == Some("latest") && i.reference.digest.is_none();
    let mut s = match (i.deliver, &c.registry) {
        (Deliver::Tarball, _) => format!(
            "cluster.kdl delivers it as a tarball in {}/ on every node; k3s imports it at start and when the \
             file appears: `rvcluster status` shows per node whether it was imported\n",
            crate::render::airgap::IMAGES_DIR
        ),
        (Deliver::Registry, Some(r)) => format!(
            "cluster.kdl pushes it to the registry {} ({}); the node pulls it through the mirror for {}: \
             check that the node reaches {}\n",
            r.name,
            r.endpoint(),
            i.reference.registry,
            r.host_port()
        ),
        (Deliver::Registry, None) => String::new(),
    };
    if always {
        s.push_str(
            "a `:latest` image is pulled with imagePullPolicy Always, even when the node has it: pin another tag, \
             or set imagePullPolicy: IfNotPresent\n",
        );
    }
    s
}

/// Where `docker://` sources (and build bases) are fetched from: the cluster's `upstream` entries.
pub fn remote_sources(c: &Cluster) -> RemoteSources {
    RemoteSources { upstream_overrides: mirror_config(c).upstream_overrides, options: BTreeMap::new() }
}

/// Why the `image` entries could not be loaded, built, pushed or checked. Texts name the image
/// (and the registry URL for the external-registry check); never a credential.
#[derive(Debug, thiserror::Error)]
pub enum ImagesError {
    #[error(transparent)]
    Build(Box<crate::build::BuildError>),
    #[error(
        "image {image}: no mirror sends containerd to the registry {endpoint} for it (add `mirror \"{registry}\"` to the registry block, \
         or deliver=\"tarball\" on the image)"
    )]
    NoMirror { image: String, endpoint: String, registry: String },
    #[error("image {image}: {source}")]
    Load { image: String, source: Box<crate::registry::RegistryError> },
    #[error("image {image}: the source's linux/riscv64 manifest is {actual} but the lock file pins {pinned}")]
    LockMismatch { image: String, actual: String, pinned: String },
    #[error("image {image}: {source}")]
    Tarball { image: String, source: Box<crate::airgap::AirgapError> },
    #[error("no registry block")]
    NoRegistry,
    #[error(transparent)]
    Registry(Box<crate::registry::RegistryError>),
    #[error("GET {url}: HTTP {status}: the registry refused the credentials of `{user}` (check password-file/password-env)")]
    CredentialsRefused { url: String, status: u16, user: String },
    #[error("GET {url}: HTTP {status}: the registry wants credentials; add `auth user=\"NAME\" password-file=\"PATH\"` to the registry block")]
    CredentialsWanted { url: String, status: u16 },
    #[error("GET {url}: the registry speaks https, but cluster.kdl says `tls #false`; write `tls #true` (with ca=\"PATH\" if its CA is private)")]
    SpeaksHttps { url: String },
    #[error("GET {url}: the registry answers plain HTTP, but cluster.kdl says `tls #true`; write `tls #false`")]
    SpeaksHttp { url: String },
    #[error("GET {url} ({declared}): {source}")]
    External { url: String, declared: String, source: Box<crate::registry::RegistryError> },
}

impl From<crate::build::BuildError> for ImagesError {
    fn from(e: crate::build::BuildError) -> ImagesError {
        ImagesError::Build(Box::new(e))
    }
}

impl From<crate::registry::RegistryError> for ImagesError {
    fn from(e: crate::registry::RegistryError) -> ImagesError {
        ImagesError::Registry(Box::new(e))
    }
}

/// The source an image entry pushes from. A built image is its archive in the build cache
/// (built now when the cache does not have its inputs yet), so it pushes like `oci-archive:`.
fn to_source(c: &Cluster, i: &Image, remote: &RemoteSources) -> Result<Source, ImagesError> {
    Ok(match &i.source {
        ImageSource::OciArchive(p) => Source::OciArchive(p.clone()),
        ImageSource::OciDir(p) => Source::OciDir(p.clone()),
        ImageSource::DockerArchive(p) => Source::DockerArchive(p.clone()),
        ImageSource::Docker(r) => Source::Docker(r.clone()),
        ImageSource::Build(_) => {
            let built = crate::build::build(c, i, &crate::build::Options { remote, rebuild: false })?;
            Source::OciArchive(built.archive)
        }
    })
}

/// Loads every `image` entry pushed to the registry and says where it goes there.
pub fn push_items(c: &Cluster, locked: &BTreeMap<String, String>) -> Result<Vec<PushItem>, ImagesError> {
    let Some(r) = &c.registry else { return Ok(vec![]) };
    let cfg = mirror_config(c);
    let remote = remote_sources(c);
    let mut items = Vec::new();
    for i in c.pushed_images() {
        let dest = resolve::destination(&cfg, &i.reference, &r.endpoint()).ok_or_else(|| ImagesError::NoMirror {
            image: i.reference.to_string(),
            endpoint: r.endpoint(),
            registry: i.reference.registry.clone(),
        })?;
        // docker:// sources are fetched by the locked digest when cluster.lock pins one.
        let pinned = locked.get(&i.reference.to_string()).map(String::as_str);
        let src = to_source(c, i, &remote)?;
        let image = source::load_pinned(&src, &remote, pinned).map_err(|e| ImagesError::Load { image: i.reference.to_string(), source: Box::new(e) })?;
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

/// What each `image` entry resolves to now (for cluster.lock), loading every source. A tarball
/// image has no repository (it never goes to a registry).
pub fn resolved(c: &Cluster) -> Result<BTreeMap<String, crate::lock::LockedImage>, ImagesError> {
    let source_of = |name: &str| {
        c.images
            .iter()
            .find(|x| x.reference.to_string() == name)
            .map(|x| {
                let d = x.source.describe();
                d.replace(&format!("{}/", c.base_dir.display()), "")
            })
            .unwrap_or_default()
    };
    let mut out: BTreeMap<String, crate::lock::LockedImage> = push_items(c, &BTreeMap::new())?
        .into_iter()
        .map(|i| {
            (
                i.name.clone(),
                crate::lock::LockedImage {
                    manifest: i.image.manifest_digest.clone(),
                    index: i.image.index_digest.clone(),
                    repository: i.repository.clone(),
                    source: source_of(&i.name),
                },
            )
        })
        .collect();
    let remote = remote_sources(c);
    for i in c.tarball_images() {
        let name = i.reference.to_string();
        let img = source::load(&to_source(c, i, &remote)?, &remote).map_err(|e| ImagesError::Load { image: name.clone(), source: Box::new(e) })?;
        out.insert(
            name.clone(),
            crate::lock::LockedImage {
                manifest: img.manifest_digest.clone(),
                index: img.index_digest.clone(),
                repository: String::new(),
                source: source_of(&name),
            },
        );
    }
    Ok(out)
}

/// The tarball of every `image` entry delivered as a tarball, built into the local cache when
/// not there yet (docker:// sources are fetched by the digest cluster.lock pins, if any); each
/// with whether it was built now.
pub fn tarballs(c: &Cluster, locked: &BTreeMap<String, String>) -> Result<Vec<(Tarball, crate::airgap::Origin)>, ImagesError> {
    let remote = remote_sources(c);
    let mut out = Vec::new();
    for i in c.tarball_images() {
        let name = i.reference.to_string();
        let pinned = locked.get(&name).map(String::as_str);
        let img = source::load_pinned(&to_source(c, i, &remote)?, &remote, pinned).map_err(|e| ImagesError::Load { image: name.clone(), source: Box::new(e) })?;
        if let Some(pin) = pinned
            && *pin != img.manifest_digest
        {
            return Err(ImagesError::LockMismatch { image: name, actual: img.manifest_digest.clone(), pinned: pin.to_string() });
        }
        out.push(crate::airgap::tarball(&i.reference, &img).map_err(|e| ImagesError::Tarball { image: name, source: Box::new(e) })?);
    }
    Ok(out)
}

/// The tarballs' lines for plan and apply output.
pub fn render_tarballs(t: &[(Tarball, crate::airgap::Origin)]) -> String {
    t.iter()
        .map(|(t, o)| {
            let o = match o {
                crate::airgap::Origin::Cached => "cached",
                crate::airgap::Origin::Built => "built now",
            };
            format!("{} -> {}/{} ({} bytes, {o})\n", t.image, crate::render::airgap::IMAGES_DIR, t.file_name, t.size)
        })
        .collect()
}

/// The `/v2/` check of an external registry, as the nodes will reach it: it answers, the
/// credentials are accepted, and it speaks what cluster.kdl declares (plain HTTP, or https
/// trusted through `ca=` or the system's CAs). Ok is a one-line description of what answered.
pub fn check_external(c: &Cluster, password: Option<&str>) -> Result<String, ImagesError> {
    use crate::registry::RegistryError as E;
    let r = c.registry.as_ref().ok_or(ImagesError::NoRegistry)?;
    let client = RegistryClient::new(&r.endpoint(), registry_options(c, password))?;
    let declared = if r.tls.enabled {
        match &r.tls.ca {
            Some(ca) => format!("https trusting {}", ca.display()),
            None => "https trusting the system's CAs".to_string(),
        }
    } else {
        "plain HTTP, tls #false".to_string()
    };
    let url = format!("{}/v2/", r.endpoint());
    match client.ping() {
        Ok(()) => Ok(format!(
            "GET {url}: ok ({declared}{})",
            r.auth.as_ref().map(|a| format!(", credentials of `{}` accepted", a.user)).unwrap_or_default()
        )),
        Err(E::Unauthorized { status, .. }) => Err(match &r.auth {
            Some(a) => ImagesError::CredentialsRefused { url, status, user: a.user.clone() },
            None => ImagesError::CredentialsWanted { url, status },
        }),
        Err(E::Http { status: 400, body, .. }) if !r.tls.enabled && body.to_lowercase().contains("https") => Err(ImagesError::SpeaksHttps { url }),
        // rustls reading an HTTP answer where a TLS record should be.
        Err(e @ (E::Tls { .. } | E::Transport { .. })) if r.tls.enabled && e.to_string().contains("InvalidContentType") => Err(ImagesError::SpeaksHttp { url }),
        Err(e) => Err(ImagesError::External { url, declared, source: Box::new(e) }),
    }
}

pub fn client(c: &Cluster, password: Option<&str>) -> Result<Option<RegistryClient>, ImagesError> {
    let Some(r) = &c.registry else { return Ok(None) };
    Ok(Some(RegistryClient::new(&r.endpoint(), registry_options(c, password))?))
}

/// Plan (dry) or push (wet) the `image` entries; progress goes to `events` (src/output draws it).
pub fn push_images(
    c: &Cluster,
    password: Option<&str>,
    wet: bool,
    locked: &BTreeMap<String, String>,
    known_repos: &[String],
    events: &dyn crate::event::PushSink,
) -> Result<(PushPlan, Option<push::PushReport>), ImagesError> {
    let Some(client) = client(c, password)? else {
        return Err(ImagesError::NoRegistry);
    };
    let items = push_items(c, locked)?;
    // Repositories the registry already holds (from cluster.lock): their blobs can be mounted.
    let known: Vec<String> = known_repos.to_vec();
    let plan = push::plan(&client, &items, &known)?;
    if !wet {
        return Ok((plan, None));
    }
    let report = push::push(&client, &items, &plan, events)?;
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
