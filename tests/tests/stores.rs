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

// Azure Blob Storage, against Azurite.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn abs_store_conforms() {
    let azurite = distributary_tests::azurite::AzuriteServer::start();
    conformance::run_all(azurite.store("conformance/prefix").await).await;
    // The container's root (no prefix) works as well.
    conformance::run_all(azurite.store("").await).await;
}

/// Files larger than a block go up as staged blocks and one conditional
/// commit: create-if-absent and compare-and-swap still hold, racing too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn abs_large_files_commit_blocks_under_the_condition() {
    use distributary_core::store::{ETag, Payload, PutMode};
    let azurite = distributary_tests::azurite::AzuriteServer::start();
    let container = azurite.create_container().await;
    let store = std::sync::Arc::new(azurite.connect(&container, "big").with_block_size(64 * 1024));
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, fill: u8, len: usize| {
        let path = dir.path().join(name);
        std::fs::write(&path, vec![fill; len]).unwrap();
        path
    };
    // Exactly two blocks, then two and a bit.
    let first = store.put("seg", Payload::File(file("a", 1, 128 * 1024)), PutMode::Create).await.unwrap();
    assert_eq!(first.size, 128 * 1024);
    let err = store.put("seg", Payload::File(file("b", 2, 200 * 1024)), PutMode::Create).await.unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err}");
    let stale = ETag("\"0x8D000000000000\"".into());
    let err = store.put("seg", Payload::File(file("c", 3, 200 * 1024)), PutMode::Update(stale)).await.unwrap_err();
    assert!(matches!(err, StoreError::PreconditionFailed { .. }), "{err}");
    let second = store
        .put("seg", Payload::File(file("d", 4, 200 * 1024 + 5)), PutMode::Update(first.etag.clone().unwrap()))
        .await
        .unwrap();
    let (bytes, meta) = store.get_bytes("seg").await.unwrap();
    assert_eq!((bytes.len(), meta.etag), (200 * 1024 + 5, second.etag));
    assert!(bytes.iter().all(|&b| b == 4));
    // Racing creators of a multi-block file: exactly one wins, whole.
    let mut tasks = Vec::new();
    for i in 0..6u8 {
        let (store, path) = (store.clone(), file(&format!("race{i}"), i, 150 * 1024));
        tasks.push(tokio::spawn(async move { (i, store.put("race", Payload::File(path), PutMode::Create).await) }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            (i, Ok(_)) => winners.push(i),
            (_, Err(StoreError::AlreadyExists { .. })) => {}
            (i, Err(e)) => panic!("writer {i}: {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let (bytes, _) = store.get_bytes("race").await.unwrap();
    assert!(bytes.len() == 150 * 1024 && bytes.iter().all(|&b| b == winners[0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abs_missing_container_is_permanent_and_says_to_create_it() {
    use distributary_core::store::{Payload, PutMode};
    let azurite = distributary_tests::azurite::AzuriteServer::start();
    let container = azurite.new_container_name();
    let store = azurite.connect(&container, "db");
    for err in [
        store.head("manifest.json").await.unwrap_err(),
        store.get_bytes("manifest.json").await.unwrap_err(),
        store.put("manifest.json", Payload::Bytes("x".into()), PutMode::Create).await.unwrap_err(),
        store.list("").await.unwrap_err(),
    ] {
        assert!(!err.is_retryable(), "{err}");
        let message = err.to_string();
        assert!(message.contains(&container) && message.contains("create the container"), "{message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abs_wrong_key_is_a_permanent_auth_error() {
    use distributary_core::store::{AbsCredential, AbsStore};
    let azurite = distributary_tests::azurite::AzuriteServer::start();
    let container = azurite.create_container().await;
    let mut options = azurite.options(&container, "db");
    options.credential = AbsCredential::AccountKey("d3Jvbmcga2V5IGZvciB0aGUgdGVzdA==".into());
    let store = AbsStore::connect(options).unwrap();
    let err = store.head("manifest.json").await.unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    let message = err.to_string();
    assert!(message.contains("manifest.json") && message.contains("credentials were refused"), "{message}");
    assert!(!store.url().contains("d3Jvbmcg"), "{}", store.url());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abs_unreachable_endpoint_is_retryable_and_open_reads_the_environment() {
    let port = distributary_tests::moto::free_port();
    let options = distributary_core::store::AbsOptions {
        account: "acct".into(),
        container: "box".into(),
        prefix: "p".into(),
        endpoint: Some(format!("http://127.0.0.1:{port}/acct")),
        credential: distributary_core::store::AbsCredential::AccountKey("a2V5".into()),
    };
    let store = distributary_core::store::AbsStore::connect(options).unwrap();
    let err = store.head("manifest.json").await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("manifest.json") && err.to_string().contains("unreachable"), "{err}");
    // A URL's secrets are refused before anything is opened.
    let err = open("abs://box/p?account=a&key=c2VjcmV0").await.unwrap_err().to_string();
    assert!(err.contains("AZURE_STORAGE_ACCOUNT_KEY") && !err.contains("c2VjcmV0"), "{err}");
}
