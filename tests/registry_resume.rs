//! A dropped connection during a blob upload. The client asks the registry where the upload
//! stands (GET on the upload URL) and continues from the reported Range; when the registry has
//! invalidated the session (Distribution 2.8 does so after a half-received chunk), the blob
//! starts over in a fresh session. Either way the push completes and is verified by digest.

#[path = "../fixtures/images/gen.rs"]
mod images;
#[path = "support/registry.rs"]
mod support;

use std::sync::atomic::Ordering;
use std::sync::mpsc;

use images::Layer;
use rvcluster::registry::push::{self, BlobState, PushEvent, PushReport};
use rvcluster::registry::{ClientOptions, PushItem, RegistryClient, RemoteSources, Source, load};
use support::{CutAt, CutProxy, Opts, TestRegistry};

const MIB: u64 = 1024 * 1024;

struct Run {
    report: PushReport,
    events: Vec<PushEvent>,
    layer_size: u64,
    cuts: u32,
}

fn push_through_proxy(reg: &TestRegistry, cut: CutAt, repo: &str, seed: u64) -> (Run, images::Written) {
    let work = tempfile::tempdir().unwrap();
    let tar = work.path().join("img.tar");
    let w = images::oci_archive(work.path(), &tar, &["riscv64"], &[Layer::new("big", 12 * MIB, seed)]);
    let proxy = CutProxy::start(reg.host_port(), cut);
    let opts = ClientOptions { chunk_size: 4 * MIB, ..Default::default() };
    let client = RegistryClient::new(&proxy.endpoint(), opts).unwrap();
    let image = load(&Source::OciArchive(tar), &RemoteSources::default()).unwrap();
    let layer_size = image.layers[0].size;
    let items = [PushItem { name: repo.into(), image, repository: repo.into(), tag: Some("1".into()), locked_manifest_digest: None }];
    let (tx, rx) = mpsc::channel();
    let (_, report) = push::plan_and_push(&client, &items, &[], &tx).unwrap_or_else(|e| panic!("{e}\n{}", reg.log()));
    drop(tx);
    let events = rx.iter().collect();
    let cuts = proxy.cuts.load(Ordering::SeqCst);
    (Run { report, events, layer_size, cuts }, w)
}

fn retries(events: &[PushEvent]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| match e {
            PushEvent::Blob { state: BlobState::Retrying { resume_at, .. }, .. } => Some(*resume_at),
            _ => None,
        })
        .collect()
}

fn verified(reg: &TestRegistry, repo: &str, w: &images::Written, layer_size: u64) {
    let v = reg.skopeo_inspect(repo, "1").unwrap();
    assert_eq!(v["Digest"], w.manifest("riscv64"));
    let direct = RegistryClient::new(&reg.endpoint(), ClientOptions::default()).unwrap();
    assert_eq!(direct.blob_size(repo, &w.layers_of("riscv64")[0]).unwrap(), Some(layer_size));
}

#[test]
fn connection_dropped_between_chunks_resumes_at_the_reported_range() {
    let reg = TestRegistry::start(Opts::default());
    // Cut at the start of the first chunk PATCH after 5 MiB: the third 4 MiB chunk.
    let (run, w) = push_through_proxy(&reg, CutAt::BigUploadStartAfter(5 * MIB), "riscv64/resume", 5);
    assert_eq!(run.cuts, 1);
    assert_eq!(retries(&run.events), vec![8 * MIB], "resumed after two accepted chunks: {:?}", run.events);
    // Only the chunk in flight when the connection died (up to 4 MiB, depending on how much the
    // kernel buffered before the failure showed) is counted twice: the accepted 8 MiB were not.
    let extra = run.report.bytes_sent() - run.layer_size;
    assert!(extra <= 4 * MIB + 4096, "re-sent {extra} bytes");
    verified(&reg, "riscv64/resume", &w, run.layer_size);
}

#[test]
fn connection_cut_mid_chunk_restarts_the_blob_and_still_verifies() {
    let reg = TestRegistry::start(Opts::default());
    let (run, w) = push_through_proxy(&reg, CutAt::Bytes(5 * MIB), "riscv64/restart", 6);
    assert_eq!(run.cuts, 1);
    // The registry refused the half-written session, so the blob started over at 0.
    assert_eq!(retries(&run.events), vec![0]);
    // At most what went out before the cut (two 4 MiB chunks) is sent twice.
    assert!(run.report.bytes_sent() < run.layer_size + 8 * MIB + 4096, "sent {}", run.report.bytes_sent());
    verified(&reg, "riscv64/restart", &w, run.layer_size);
}

#[test]
fn requests_without_a_streamed_body_are_replayed_after_a_dropped_connection() {
    let reg = TestRegistry::start(Opts::default());
    // The very first request (GET /v2/) loses its connection before reaching the registry.
    let proxy = CutProxy::start(reg.host_port(), CutAt::RequestStartAfter(0));
    let client = RegistryClient::new(&proxy.endpoint(), ClientOptions::default()).unwrap();
    client.ping().unwrap();
    assert_eq!(proxy.cuts.load(Ordering::SeqCst), 1);
    assert_eq!(client.manifest_digest("nothing/here", "1").unwrap(), None);
}
