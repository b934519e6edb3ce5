//! The store conformance suite against a real S3-compatible server (moto on
//! loopback), and the read-only HTTP backend over the same server.

use distributary_core::store::{HttpStore, Store, StoreError, StoreUrl, conformance, open};
use distributary_tests::moto::MotoServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_store_conforms() {
    let moto = MotoServer::start();
    conformance::run_all(moto.store("conformance/prefix").await).await;
    // The bucket's root (no prefix) works as well.
    conformance::run_all(moto.store("").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http_store_reads_what_s3_wrote() {
    let moto = MotoServer::start();
    let bucket = moto.create_bucket();
    moto.make_public(&bucket);
    let writer = distributary_tests::moto::s3_store(&moto.endpoint(), &bucket, "db").await;
    let reader = HttpStore::new(format!("{}/{bucket}/db", moto.endpoint()), None).unwrap();
    conformance::run_read_only(&writer, &reader).await;
    assert!(matches!(reader.list("").await, Err(StoreError::Unsupported { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_endpoint_is_a_retryable_error_naming_the_key() {
    // A port nobody listens on.
    let port = distributary_tests::moto::free_port();
    let store = distributary_tests::moto::s3_store(&format!("http://127.0.0.1:{port}"), "bucket", "p").await;
    let err = store.head("manifest.json").await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    let message = err.to_string();
    assert!(message.contains("manifest.json") && message.contains("unreachable"), "{message}");
}

#[tokio::test]
async fn open_parses_urls_in_one_place() {
    let err = open("memory://").await.unwrap_err().to_string();
    assert!(err.contains("for tests"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    assert!(open(&url).await.is_ok());
    let err = open("s3://Bad_Bucket/x").await.unwrap_err().to_string();
    assert!(err.contains("bucket name") && err.contains("for example"), "{err}");
    assert!(matches!(StoreUrl::parse("http://host/db").unwrap(), StoreUrl::Http { .. }));
}
