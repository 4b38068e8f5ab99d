//! End-to-end: `dl download cifar10` and `dl mlp --download` against a loopback HTTP server
//! serving a small archive in the official layout.

mod common;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::thread;

use common::{assert_clean_failure, dl, last_json, learnable_cifar};

/// A `.tar.gz` of a fixture `cifar-10-batches-bin/` folder, as the official archive is laid out.
fn fixture_archive(work: &Path) -> Vec<u8> {
    let src = learnable_cifar(&work.join("src"), 6, 10);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    {
        let mut tar = tar::Builder::new(&mut gz);
        tar.append_dir_all("cifar-10-batches-bin", src.join("cifar-10-batches-bin"))
            .unwrap();
        tar.finish().unwrap();
    }
    gz.flush().unwrap();
    gz.finish().unwrap()
}

/// Serves `body` at `/cifar-10-binary.tar.gz` (404 elsewhere) on a loopback port, for as
/// many requests as the test makes; returns the base URL.
fn serve(body: Vec<u8>) -> String {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let url = format!("http://{}", server.server_addr().to_ip().unwrap());
    thread::spawn(move || {
        for request in server.incoming_requests() {
            let response = if request.url() == "/cifar-10-binary.tar.gz" {
                tiny_http::Response::from_data(body.clone())
            } else {
                tiny_http::Response::from_data(b"not here".to_vec()).with_status_code(404)
            };
            let _ = request.respond(response);
        }
    });
    url
}

fn leftovers(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn downloads_verifies_and_unpacks() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = fixture_archive(tmp.path());
    let md5 = data::download::md5_hex(&archive);
    let base = serve(archive);
    let url = format!("{base}/cifar-10-binary.tar.gz");

    // A wrong checksum is refused and leaves nothing behind.
    let dest = tmp.path().join("bad");
    let out = dl(&[
        "download",
        "cifar10",
        "--dir",
        dest.to_str().unwrap(),
        "--url",
        &url,
        "--md5",
        "0123456789abcdef0123456789abcdef",
    ]);
    assert_clean_failure(&out, "checksum mismatch");
    assert!(leftovers(&dest).is_empty(), "left behind: {:?}", leftovers(&dest));

    // A missing file on the server is a clear error too.
    let out = dl(&[
        "download",
        "cifar10",
        "--dir",
        dest.to_str().unwrap(),
        "--url",
        &format!("{base}/nope.tar.gz"),
        "--md5",
        &md5,
    ]);
    assert_clean_failure(&out, "404");
    assert!(leftovers(&dest).is_empty(), "left behind: {:?}", leftovers(&dest));

    // The right checksum: the dataset lands in DIR/cifar-10-batches-bin, nothing else stays.
    let dest = tmp.path().join("good");
    let out = dl(&[
        "download",
        "cifar10",
        "--dir",
        dest.to_str().unwrap(),
        "--url",
        &url,
        "--md5",
        &md5,
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(leftovers(&dest), ["cifar-10-batches-bin"]);
    let loaded = data::Cifar10::load(&dest).unwrap();
    assert_eq!((loaded.train.len(), loaded.test.len()), (30, 10));

    // A second call finds it in place and fetches nothing.
    let out = dl(&[
        "download",
        "cifar10",
        "--dir",
        dest.to_str().unwrap(),
        "--url",
        &format!("{base}/nope"),
        "--md5",
        &md5,
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already"));
}

#[test]
fn an_experiment_fetches_its_data_on_request() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = fixture_archive(tmp.path());
    let md5 = data::download::md5_hex(&archive);
    let url = format!("{}/cifar-10-binary.tar.gz", serve(archive));
    let dest = tmp.path().join("fetched");
    let run = tmp.path().join("run");
    let out = dl(&[
        "mlp",
        "--data",
        dest.to_str().unwrap(),
        "--download",
        "--url",
        &url,
        "--md5",
        &md5,
        "--steps",
        "5",
        "--batch-size",
        "10",
        "--out",
        run.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(last_json(&out)["steps"], 5);
    assert!(dest.join("cifar-10-batches-bin").join("test_batch.bin").is_file());
}
