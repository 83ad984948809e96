//! Driver for bench/push.sh (built as the `push` example):
//!   push mkimage OUT.tar TOTAL_MB LAYERS   deterministic single-platform linux/riscv64 oci-archive
//!   push push ENDPOINT SOURCE REPO TAG     plan + push; prints one JSON line with digest, bytes, seconds
//! Uses the same image generator as the tests (fixtures/images/gen.rs).

#[path = "../fixtures/images/gen.rs"]
mod images;

use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Instant;

use rvcluster::registry::{ClientOptions, PushItem, RegistryClient, RemoteSources, Source, load, push};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["mkimage", out, mb, layers] => mkimage(out, mb, layers),
        ["push", endpoint, source, repo, tag] => run_push(endpoint, source, repo, tag),
        _ => Err("usage: push mkimage OUT.tar TOTAL_MB LAYERS | push push ENDPOINT SOURCE REPO TAG".into()),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn mkimage(out: &str, mb: &str, layers: &str) -> Result<(), String> {
    let mb: u64 = mb.parse().map_err(|_| "TOTAL_MB must be a number")?;
    let n: u64 = layers.parse().map_err(|_| "LAYERS must be a number")?;
    let out = std::path::Path::new(out);
    let work = out.parent().unwrap_or(std::path::Path::new("."));
    let layers: Vec<images::Layer> =
        (0..n).map(|i| images::Layer::gz(&format!("layer{i}"), mb * 1_000_000 / n, 100 + i)).collect();
    let w = images::oci_archive(work, out, &["riscv64"], &layers);
    println!("{}", w.manifest("riscv64"));
    Ok(())
}

fn run_push(endpoint: &str, source: &str, repo: &str, tag: &str) -> Result<(), String> {
    let start = Instant::now();
    let src = Source::parse(source).map_err(|e| e.to_string())?;
    let image = load(&src, &RemoteSources::default()).map_err(|e| e.to_string())?;
    let client = RegistryClient::new(endpoint, ClientOptions::default()).map_err(|e| e.to_string())?;
    let items = [PushItem { name: repo.into(), image, repository: repo.into(), tag: Some(tag.into()), locked_manifest_digest: None }];
    let (tx, rx) = mpsc::channel();
    let drain = std::thread::spawn(move || rx.iter().count());
    let (plan, report) = push::plan_and_push(&client, &items, &[], &tx).map_err(|e| e.to_string())?;
    drop(tx);
    let _ = drain.join();
    println!(
        "{{\"digest\":\"{}\",\"planned_bytes\":{},\"bytes_sent\":{},\"seconds\":{:.3}}}",
        report.images[0].manifest_digest,
        plan.bytes_to_send(),
        report.bytes_sent(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
