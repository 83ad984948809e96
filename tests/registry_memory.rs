//! A >= 100 MB layer is pushed with bounded memory: blobs are streamed from the archive in chunks,
//! never held in memory. Alone in its test binary so VmHWM is not disturbed by other tests.

#[path = "../fixtures/images/gen.rs"]
mod images;
#[path = "support/registry.rs"]
mod support;

use std::sync::mpsc;

use images::Layer;
use rvcluster::registry::push;
use rvcluster::registry::{PushItem, RegistryClient, RemoteSources, Source, load};
use support::{Opts, TestRegistry, vm_hwm};

#[test]
fn a_100_mb_layer_is_pushed_with_bounded_memory() {
    let reg = TestRegistry::start(Opts::default());
    let work = tempfile::tempdir().unwrap();
    let tar = work.path().join("big.tar");
    let w = images::oci_archive(work.path(), &tar, &["riscv64"], &[Layer::new("huge", 110 * 1000 * 1000, 11)]);
    let client = RegistryClient::new(&reg.endpoint(), reg.client_options()).unwrap();
    let image = load(&Source::OciArchive(tar), &RemoteSources::default()).unwrap();
    assert!(image.layers[0].size >= 100_000_000);
    let items = [PushItem { name: "huge".into(), image, repository: "riscv64/huge".into(), tag: Some("1".into()), locked_manifest_digest: None }];
    let (tx, rx) = mpsc::channel();
    let drain = std::thread::spawn(move || rx.iter().count());
    let before = vm_hwm();
    let (_, report) = push::plan_and_push(&client, &items, &[], &tx).unwrap();
    let growth = vm_hwm().saturating_sub(before);
    drop(tx);
    assert!(drain.join().unwrap() > 3, "progress events were sent");
    assert!(report.bytes_sent() >= 100_000_000);
    assert!(growth < 64 * 1024 * 1024, "peak RSS grew by {} MiB", growth / (1024 * 1024));
    eprintln!("peak RSS growth while pushing {} MB: {} KiB", report.bytes_sent() / 1_000_000, growth / 1024);
    let v = reg.skopeo_inspect("riscv64/huge", "1").unwrap();
    assert_eq!(v["Digest"], w.manifest("riscv64"));
}
