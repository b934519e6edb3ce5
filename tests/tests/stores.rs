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

// SFTP: a real OpenSSH server (tests/src/sshd.rs) on loopback.

mod sftp {
    use std::sync::Arc;
    use std::time::Duration;

    use distributary_core::store::sftp::LockSettings;
    use distributary_core::store::{HostKeyCheck, PutMode, SftpAuth, SftpStore, Store, StoreError, conformance, open};
    use distributary_tests::sshd::SshServer;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sftp_store_conforms() {
        let server = SshServer::start();
        conformance::run_all(server.store()).await;
        // Through the URL, as the programs open it.
        let store = open(&server.url(&server.fresh_root())).await.unwrap();
        assert!(!store.url().contains("key-path"), "{}", store.url());
        conformance::run_all(store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sftp_refuses_an_unknown_or_changed_host_key() {
        let server = SshServer::start();
        let mut options = server.options(&server.fresh_root());
        let empty = server.data_dir().join("empty_known_hosts");
        std::fs::write(&empty, "").unwrap();
        options.host_keys = HostKeyCheck::KnownHosts(empty.clone());
        let err = SftpStore::connect(options.clone()).await.unwrap_err();
        let message = err.to_string();
        assert!(!err.is_retryable(), "{message}");
        assert!(message.contains(&format!("[127.0.0.1]:{}", server.port())), "{message}");
        assert!(message.contains("is not in") && message.contains("ssh-keyscan"), "{message}");
        // A different key recorded for the host: a changed key.
        let other = std::fs::read_to_string(server.other_key_path().with_extension("pub")).unwrap();
        std::fs::write(&empty, format!("[127.0.0.1]:{} {other}", server.port())).unwrap();
        let err = SftpStore::connect(options.clone()).await.unwrap_err();
        let message = err.to_string();
        assert!(!err.is_retryable(), "{message}");
        assert!(message.contains("does not match line 1") && message.contains("ssh-keygen -R"), "{message}");
        // Tests may skip the check; nothing else should.
        options.host_keys = HostKeyCheck::InsecureSkipForTests;
        SftpStore::connect(options).await.unwrap();
        // A pinned key (a configuration file's host-key) through the URL:
        // the server's own key lets the store in, another is refused.
        let known_hosts = std::fs::read_to_string(server.known_hosts()).unwrap();
        let host_key = known_hosts.split_once(' ').unwrap().1.trim();
        let pinned = |key: &str| {
            let escaped = key.replace('+', "%2B").replace(' ', "%20").replace('=', "%3D");
            format!("{}&host-key={escaped}", server.url(&server.fresh_root()))
        };
        let store = open(&pinned(host_key)).await.unwrap();
        assert!(matches!(store.head("nothing").await, Err(StoreError::NotFound { .. })));
        let store = open(&pinned(other.trim())).await.unwrap();
        let message = store.head("nothing").await.unwrap_err().to_string();
        assert!(message.contains("is not the host-key configured"), "{message}");
    }

    /// A password login (an account with a password, no key) writes and
    /// reads like a key login.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sftp_logs_in_with_a_password() {
        let server = SshServer::start();
        let store =
            SftpStore::connect(server.password_options()).await.unwrap_or_else(|e| panic!("{e}: {}", server.log()));
        conformance::run_all(Arc::new(store)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sftp_refuses_a_wrong_key_or_password_permanently() {
        let server = SshServer::start();
        let mut options = server.options(&server.fresh_root());
        options.auth = SftpAuth::KeyFile(server.other_key_path());
        let err = SftpStore::connect(options.clone()).await.unwrap_err();
        let message = err.to_string();
        assert!(!err.is_retryable(), "{message}");
        assert!(message.contains("refused by the server") && message.contains("authorized_keys"), "{message}");
        // The test user has no password sshd accepts: a refusal, not a hang
        // or a retryable failure.
        options.auth = SftpAuth::Password("not-the-password".into());
        let err = SftpStore::connect(options.clone()).await.unwrap_err();
        let message = err.to_string();
        assert!(!err.is_retryable(), "{message}");
        assert!(message.contains("with a password") && message.contains("DISTRIBUTARY_SFTP_PASSWORD"), "{message}");
        assert!(!message.contains("not-the-password"), "{message}");
        // An unreachable server is retryable.
        options.port = distributary_tests::moto::free_port();
        options.auth = SftpAuth::KeyFile(server.key_path());
        let err = SftpStore::connect(options).await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
    }

    /// A lock left by a crashed writer whose lease is over is broken; a
    /// live one makes the swap wait, then fail with a retryable error.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sftp_swaps_break_stale_locks_and_wait_for_live_ones() {
        let server = SshServer::start();
        let root = server.fresh_root();
        let mut options = server.options(&root);
        options.lock = LockSettings { lease: Duration::from_secs(5), wait: Duration::from_secs(1) };
        let store: Arc<dyn Store> = Arc::new(SftpStore::new(options).unwrap());
        let v1 = store.put("db/manifest.json", b"v1".to_vec().into(), PutMode::Create).await.unwrap();
        let lock = std::path::Path::new(&root).join("db/.manifest.json.lock");
        let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;

        std::fs::write(&lock, format!("deadbeef {}\n", now_ms - 1000)).unwrap();
        let v2 = store
            .put("db/manifest.json", b"v2".to_vec().into(), PutMode::Update(v1.etag.clone().unwrap()))
            .await
            .expect("a stale lock is broken");
        assert!(!lock.exists(), "the swap released its lock");
        assert!(lock.with_file_name(".manifest.json.lock.broken-deadbeef").exists(), "the tombstone stays");

        std::fs::write(&lock, format!("cafe {}\n", now_ms + 3_600_000)).unwrap();
        let started = std::time::Instant::now();
        let err = store
            .put("db/manifest.json", b"v3".to_vec().into(), PutMode::Update(v2.etag.clone().unwrap()))
            .await
            .unwrap_err();
        assert!(started.elapsed() >= Duration::from_secs(1), "waited for the holder");
        assert!(err.is_retryable(), "{err}");
        assert!(err.to_string().contains("held by writer cafe"), "{err}");
        let (bytes, meta) = store.get_bytes("db/manifest.json").await.unwrap();
        assert_eq!((&bytes[..], meta.etag), (&b"v2"[..], v2.etag.clone()));
        // Backend files never show as objects.
        let keys: Vec<String> = store.list("").await.unwrap().into_iter().map(|m| m.key).collect();
        assert_eq!(keys, ["db/manifest.json"]);
        // Once the holder is gone, swaps go through again.
        std::fs::remove_file(&lock).unwrap();
        store.put("db/manifest.json", b"v3".to_vec().into(), PutMode::Update(v2.etag.unwrap())).await.unwrap();
        assert!(matches!(
            store.put("db/manifest.json", b"v4".to_vec().into(), PutMode::Update(v1.etag.unwrap())).await,
            Err(StoreError::PreconditionFailed { .. })
        ));
    }

    /// A dropped connection is replaced on the next call.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sftp_reconnects_after_the_connection_drops() {
        let server = SshServer::start();
        let proxy = CuttableProxy::start(server.port()).await;
        let mut options = server.options(&server.fresh_root());
        options.port = proxy.port;
        let known_hosts = server.data_dir().join("proxy_known_hosts");
        let host_key = std::fs::read_to_string(server.known_hosts()).unwrap();
        let host_key = host_key.split_once(' ').unwrap().1;
        std::fs::write(&known_hosts, format!("[127.0.0.1]:{} {host_key}", proxy.port)).unwrap();
        options.host_keys = HostKeyCheck::KnownHosts(known_hosts);
        let store = SftpStore::new(options).unwrap();
        store.put("a", b"a".to_vec().into(), PutMode::Create).await.unwrap();
        proxy.cut();
        // The call that finds the connection gone fails retryably (or, if
        // the drop was already noticed, reconnects at once); the next works.
        if let Err(e) = store.head("a").await {
            assert!(e.is_retryable(), "{e}");
        }
        assert_eq!(store.head("a").await.unwrap().size, 1);
        assert!(proxy.connections() >= 2);
    }

    /// A TCP proxy whose open connections can be cut.
    struct CuttableProxy {
        port: u16,
        connections: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
        accept: tokio::task::JoinHandle<()>,
    }

    impl CuttableProxy {
        async fn start(target_port: u16) -> CuttableProxy {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let connections = Arc::new(std::sync::Mutex::new(Vec::new()));
            let tasks = connections.clone();
            let accept = tokio::spawn(async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    let task = tokio::spawn(async move {
                        let Ok(mut upstream) = tokio::net::TcpStream::connect(("127.0.0.1", target_port)).await else {
                            return;
                        };
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    });
                    tasks.lock().unwrap().push(task);
                }
            });
            CuttableProxy { port, connections, accept }
        }

        /// Drops every open connection (both sockets close).
        fn cut(&self) {
            for task in self.connections.lock().unwrap().iter() {
                task.abort();
            }
        }

        fn connections(&self) -> usize {
            self.connections.lock().unwrap().len()
        }
    }

    impl Drop for CuttableProxy {
        fn drop(&mut self) {
            self.cut();
            self.accept.abort();
        }
    }
}
