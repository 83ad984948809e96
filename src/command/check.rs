//! `rvcluster check FILE`: validate and summarize, touching no host.

use clap::Args;
use serde::Serialize;

use super::{EXIT_OK, Format, Global, Target, load_cluster};
use crate::output::Output;
use crate::profile::Profiles;
use crate::spec::{BinarySource, Cluster, ConfigValue};

#[derive(Args, Debug)]
pub struct CheckArgs {
    #[command(flatten)]
    pub target: Target,
    /// Output format (json is stable and meant for scripts).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Same as --format json.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
pub struct Summary {
    pub cluster: String,
    pub file: String,
    pub k3s: K3sSummary,
    pub nodes: Vec<NodeSummary>,
    /// Where the registry is: managed (rvcluster deploys it over SSH), external (the user runs it;
    /// never SSH), none (images delivered as tarballs to every node).
    pub registry_mode: &'static str,
    pub registry: Option<RegistrySummary>,
    pub images: Vec<ImageSummary>,
    /// Every image the cluster's pods will pull: release images minus disabled addons, plus `image` entries.
    pub release_images: Vec<NeededImage>,
}

#[derive(Serialize)]
pub struct K3sSummary {
    pub version: String,
    pub binary: String,
    pub sha256: String,
    pub disable: Vec<String>,
    pub manifests: Vec<String>,
    pub config: Vec<(String, String)>,
}

#[derive(Serialize)]
pub struct NodeSummary {
    pub name: String,
    pub role: &'static str,
    pub address: String,
    pub profile: Option<String>,
    pub tags: Vec<String>,
}

#[derive(Serialize)]
pub struct RegistrySummary {
    pub name: String,
    pub endpoint: String,
    pub auth_user: Option<String>,
    pub mirrors: Vec<String>,
}

#[derive(Serialize)]
pub struct ImageSummary {
    pub reference: String,
    pub from: String,
    /// registry or tarball.
    pub deliver: &'static str,
}

#[derive(Serialize)]
pub struct NeededImage {
    pub image: String,
    pub needed_by: String,
}

pub fn summarize(c: &Cluster, profiles: &Profiles, selected: impl Fn(&crate::spec::Node) -> bool) -> Summary {
    let disabled: Vec<&str> = c.k3s.disable.iter().map(|d| d.value.as_str()).collect();
    let release_images = profiles
        .release(&c.k3s.version)
        .map(|r| r.images(&disabled))
        .unwrap_or_default()
        .into_iter()
        .map(|(i, by)| NeededImage { image: i.to_string(), needed_by: by })
        .collect();
    Summary {
        cluster: c.name.clone(),
        file: c.file.display().to_string(),
        k3s: K3sSummary {
            version: c.k3s.version.clone(),
            binary: match &c.k3s.binary.source {
                BinarySource::File(p) => p.display().to_string(),
                BinarySource::Url(u) => u.clone(),
            },
            sha256: c.k3s.binary.sha256.clone(),
            disable: disabled.iter().map(|s| s.to_string()).collect(),
            manifests: c.k3s.manifests.iter().map(|m| m.value.display().to_string()).collect(),
            config: c.k3s.config.iter().map(|e| (e.key.clone(), show_value(&e.value))).collect(),
        },
        nodes: c
            .nodes
            .iter()
            .filter(|n| selected(n))
            .map(|n| NodeSummary {
                name: n.name.clone(),
                role: n.role.as_str(),
                address: n.address.clone(),
                profile: n.profile.as_ref().map(|p| p.value.clone()),
                tags: n.tags.clone(),
            })
            .collect(),
        registry_mode: c.registry_mode().as_str(),
        registry: c.registry.as_ref().map(|r| RegistrySummary {
            name: r.name.clone(),
            endpoint: r.endpoint(),
            auth_user: r.auth.as_ref().map(|a| a.user.clone()),
            mirrors: r
                .mirrors
                .iter()
                .map(|m| {
                    let rw: Vec<String> =
                        m.rewrites.iter().map(|w| format!("{} -> {}", w.pattern, w.replacement)).collect();
                    if rw.is_empty() { m.registry.clone() } else { format!("{} (rewrite {})", m.registry, rw.join(", ")) }
                })
                .collect(),
        }),
        images: c
            .images
            .iter()
            .map(|i| ImageSummary { reference: i.reference.to_string(), from: i.source.describe(), deliver: i.deliver.as_str() })
            .collect(),
        release_images,
    }
}

pub fn show_value(v: &ConfigValue) -> String {
    match v {
        ConfigValue::String(s) => s.clone(),
        ConfigValue::Integer(i) => i.to_string(),
        ConfigValue::Bool(b) => b.to_string(),
        ConfigValue::List(l) => l.iter().map(show_value).collect::<Vec<_>>().join(", "),
    }
}

pub fn run(global: &Global, a: &CheckArgs, out: &Output) -> i32 {
    let (profiles, cluster, filter) = match load_cluster(global, &a.target, out) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let s = summarize(&cluster, &profiles, |n| filter.matches(n));
    if a.json || a.format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&s).expect("summary serializes"));
        return EXIT_OK;
    }
    print!("{}", render_text(&s, out));
    EXIT_OK
}

fn render_text(s: &Summary, out: &Output) -> String {
    use std::fmt::Write;
    let mut t = String::new();
    let _ = writeln!(t, "{} {} ({}): valid", out.bold("cluster"), s.cluster, s.file);
    let _ = writeln!(t, "{} {}", out.bold("k3s"), s.k3s.version);
    let _ = writeln!(t, "  binary     {} sha256:{}", s.k3s.binary, &s.k3s.sha256[..12]);
    let none = || "none".to_string();
    let disabled = if s.k3s.disable.is_empty() { none() } else { s.k3s.disable.join(", ") };
    let _ = writeln!(t, "  disabled   {disabled}");
    for m in &s.k3s.manifests {
        let _ = writeln!(t, "  manifest   {m}");
    }
    for (k, v) in &s.k3s.config {
        let _ = writeln!(t, "  config     {k}: {v}");
    }
    for role in ["server", "agent"] {
        let nodes: Vec<_> = s.nodes.iter().filter(|n| n.role == role).collect();
        let _ = writeln!(t, "{} ({})", out.bold(&format!("{role}s")), nodes.len());
        for n in nodes {
            let profile = n.profile.clone().unwrap_or_else(|| "detect".into());
            let tags = if n.tags.is_empty() { String::new() } else { format!("  @{}", n.tags.join(" @")) };
            let _ = writeln!(t, "  {:<20} {:<16} profile {profile}{tags}", n.name, n.address);
        }
    }
    match &s.registry {
        Some(r) => {
            let auth = r.auth_user.as_ref().map(|u| format!(", auth user {u}")).unwrap_or_default();
            let _ = writeln!(t, "{} {} at {}{auth}", out.bold("registry"), r.name, r.endpoint);
            let mode = if s.registry_mode == "external" {
                "external (you run it; rvcluster checks /v2/ and pushes, never connects over SSH)"
            } else {
                "managed (rvcluster deploys it over SSH)"
            };
            let _ = writeln!(t, "  mode       {mode}");
            for m in &r.mirrors {
                let _ = writeln!(t, "  mirror     {m}");
            }
        }
        None => {
            let _ = writeln!(
                t,
                "{} none: `image` entries are delivered as tarballs into {} on every node; other images are pulled from upstream",
                out.bold("registry"),
                crate::render::airgap::IMAGES_DIR
            );
            let _ = writeln!(t, "  mode       none (air-gap image tarballs)");
        }
    }
    let _ = writeln!(t, "{} ({})", out.bold("images"), s.images.len());
    for i in &s.images {
        let how = if i.deliver == "tarball" { "tarball on every node" } else { "pushed to the registry" };
        let _ = writeln!(t, "  {}  <- {}  ({how})", i.reference, i.from);
    }
    let _ = writeln!(t, "{} ({})", out.bold("images the release pulls"), s.release_images.len());
    for i in &s.release_images {
        let _ = writeln!(t, "  {:<58} {}", i.image, out.dim(&i.needed_by));
    }
    t
}
