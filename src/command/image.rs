//! `rvcluster image build FILE [IMAGE...] [-o DIR]`: build the image entries that have a `build`
//! block into OCI archives (src/build), and the step plan and apply run before pushing.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{EXIT_FAILED, EXIT_INVALID, EXIT_OK, Global, Target, load_cluster};
use crate::build::{self, Built};
use crate::output::Output;
use crate::spec::Cluster;
use crate::spec::reference::ImageRef;

#[derive(Args, Debug)]
pub struct ImageArgs {
    #[command(subcommand)]
    pub command: ImageCommand,
}

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Build the image entries that have a `build` block: one OCI archive (.tar) per image.
    Build(BuildArgs),
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// The cluster description.
    #[arg(value_name = "FILE", default_value = "cluster.kdl")]
    pub file: PathBuf,
    /// Build only these images (as named in cluster.kdl); default: every image with a build block.
    #[arg(value_name = "IMAGE")]
    pub images: Vec<String>,
    /// Write the archives into DIR (created if needed), named after the image
    /// (`docker.io_rancher_mirrored-pause_3.6.tar`); default: only the build cache beside cluster.kdl.
    #[arg(short = 'o', long = "output", value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// Build again even when the cache holds an archive for the same inputs.
    #[arg(long)]
    pub rebuild: bool,
}

pub fn run(global: &Global, a: &ImageArgs, out: &Output) -> i32 {
    match &a.command {
        ImageCommand::Build(b) => run_build(global, b, out),
    }
}

fn run_build(global: &Global, a: &BuildArgs, out: &Output) -> i32 {
    let target = Target { file: a.file.clone(), on: None };
    let (_, cluster, _) = match load_cluster(global, &target, out) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let buildable: Vec<String> = build::buildable(&cluster).map(|(i, _)| i.reference.to_string()).collect();
    let mut wanted = Vec::new();
    for name in &a.images {
        let Ok(r) = ImageRef::parse(name) else {
            out.error(&format!("`{name}` is not an image reference"));
            return EXIT_INVALID;
        };
        match cluster.images.iter().find(|i| i.reference == r) {
            Some(i) if buildable.contains(&i.reference.to_string()) => wanted.push(r.to_string()),
            Some(i) => {
                out.error(&format!("{r} has no build block in {} (it comes from {})", a.file.display(), i.source.describe()));
                return EXIT_INVALID;
            }
            None => {
                out.error(&format!(
                    "{r} is not an image of {} (images with a build block: {})",
                    a.file.display(),
                    if buildable.is_empty() { "none".to_string() } else { buildable.join(", ") }
                ));
                return EXIT_INVALID;
            }
        }
    }
    if a.images.is_empty() {
        wanted = buildable;
    }
    if wanted.is_empty() {
        out.info(&format!("no image in {} has a build block: nothing to build", a.file.display()));
        return EXIT_OK;
    }
    if let Some(dir) = &a.output
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        out.error(&format!("cannot create {}: {e}", dir.display()));
        return EXIT_FAILED;
    }
    let remote = crate::images::remote_sources(&cluster);
    let opts = build::Options { remote: &remote, rebuild: a.rebuild };
    let mut code = EXIT_OK;
    for i in cluster.images.iter().filter(|i| wanted.contains(&i.reference.to_string())) {
        match build::build(&cluster, i, &opts) {
            Ok(b) => {
                let path = match &a.output {
                    None => b.archive.clone(),
                    Some(dir) => {
                        let dst = dir.join(build::archive_name(&i.reference));
                        if let Err(e) = copy_atomic(&b.archive, &dst) {
                            out.error(&format!("image {}: cannot write {}: {e}", b.image, dst.display()));
                            code = EXIT_FAILED;
                            continue;
                        }
                        dst
                    }
                };
                println!("{} {} {}", b.image, b.manifest_digest, path.display());
                out.detail(&format!("{}: inputs sha256:{}{}", b.image, b.inputs, if b.cached { " (cached)" } else { "" }));
            }
            Err(e) => {
                out.error(&e.to_string());
                code = EXIT_FAILED;
            }
        }
    }
    code
}

fn copy_atomic(src: &std::path::Path, dst: &std::path::Path) -> std::io::Result<()> {
    let tmp = dst.with_extension(format!("tar.tmp.{}", std::process::id()));
    std::fs::copy(src, &tmp)?;
    std::fs::rename(&tmp, dst)
}

/// Builds every image entry with a build block before plan or apply pushes (apply --locked
/// passes `rebuild`: the lock is compared with a fresh build, never with the cache). One line
/// per image; Err is the exit status.
pub fn build_for_push(c: &Cluster, rebuild: bool, out: &Output) -> Result<Vec<Built>, i32> {
    let remote = crate::images::remote_sources(c);
    let opts = build::Options { remote: &remote, rebuild };
    let mut built = Vec::new();
    for (i, _) in build::buildable(c) {
        match build::build(c, i, &opts) {
            Ok(b) => {
                out.info(&format!(
                    "built {} {}{}",
                    b.image,
                    b.manifest_digest,
                    if b.cached { " (cached)" } else { "" }
                ));
                built.push(b);
            }
            Err(e) => {
                out.error(&e.to_string());
                return Err(EXIT_FAILED);
            }
        }
    }
    Ok(built)
}
