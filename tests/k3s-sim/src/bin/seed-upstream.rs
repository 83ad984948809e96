//! `seed-upstream ENDPOINT`: push the deterministic lab images (fixtures/upstream/images.txt) to
//! a registry, e.g. `seed-upstream http://127.0.9.1:5000`.
//! `seed-upstream --riscv64 ENDPOINT REPO:TAG...`: push tiny linux/riscv64 "ports" under the
//! given names (what the blog authors built by hand), e.g. for a private mirror.
use k3s_sim::upstream::{self, Format, ImageSpec, Platform};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let res = match args.as_slice() {
        [flag, endpoint, images @ ..] if flag == "--riscv64" && !images.is_empty() => images
            .iter()
            .map(|img| {
                let (repo, tag) = img.rsplit_once(':').filter(|(_, t)| !t.contains('/')).unwrap_or((img.as_str(), "latest"));
                let spec = ImageSpec { repository: repo.into(), tag: tag.into(), format: Format::OciIndex, platforms: vec![Platform { os: "linux".into(), arch: "riscv64".into(), variant: None }] };
                let built = upstream::build(&spec);
                upstream::push(endpoint, repo, &built).map(|_| upstream::SeededImage { name: format!("{repo}:{tag}"), digest: built.top_digest.clone(), platforms: vec!["linux/riscv64".into()] })
            })
            .collect::<Result<Vec<_>, _>>(),
        [endpoint] if !endpoint.starts_with('-') => upstream::seed(endpoint),
        _ => {
            eprintln!("usage: seed-upstream ENDPOINT                       (e.g. http://127.0.9.1:5000)\n       seed-upstream --riscv64 ENDPOINT REPO:TAG...   (riscv64-only ports under those names)");
            std::process::exit(2);
        }
    };
    match res {
        Ok(images) => {
            for i in images {
                println!("{}\t{}\t{}", i.name, i.digest, i.platforms.join(","));
            }
        }
        Err(e) => {
            eprintln!("seed-upstream: {e}");
            std::process::exit(1);
        }
    }
}
