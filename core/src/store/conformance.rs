//! The behaviour every [`Store`] backend must show, as one suite run against
//! each of them (memory and file in unit tests; S3 against a real
//! S3-compatible server and HTTP over it in the integration tests).
//!
//! Each check takes a store whose prefix is fresh and empty, and panics with
//! a message naming the check and the backend when the contract is broken.

#[cfg(not(target_arch = "wasm32"))]
use std::sync::Arc;

use bytes::Bytes;

use super::{ByteRange, GetOptions, Payload, PutMode, Store, StoreError};

fn fail(store: &dyn Store, check: &str, detail: impl std::fmt::Display) -> ! {
    panic!("conformance [{}] {check}: {detail}", store.url())
}

// Native only: files and tokio tasks (the read-only checks run in wasm too).
#[cfg(not(target_arch = "wasm32"))]
/// Runs every check for a writable store.
pub async fn run_all(store: Arc<dyn Store>) {
    put_get_head_round_trip(store.as_ref()).await;
    missing_objects_are_not_found(store.as_ref()).await;
    create_refuses_an_existing_key(store.as_ref()).await;
    compare_and_swap(store.as_ref()).await;
    conditional_get(store.as_ref()).await;
    byte_ranges(store.as_ref()).await;
    delete_is_idempotent(store.as_ref()).await;
    list_by_prefix(store.as_ref()).await;
    large_objects_stream(store.as_ref()).await;
    file_payloads(store.as_ref()).await;
    invalid_keys_are_refused(store.as_ref()).await;
    concurrent_creators_one_wins(store.clone(), 16).await;
    concurrent_swaps_one_wins(store, 8).await;
}

/// Runs the checks a read-only store must pass, over objects written through
/// `writer` (another store on the same data).
pub async fn run_read_only(writer: &dyn Store, reader: &dyn Store) {
    let body = Bytes::from_static(b"0123456789abcdefghij");
    let written = writer.put("ro/object", Payload::Bytes(body.clone()), PutMode::Create).await.unwrap();
    let (bytes, meta) = reader.get_bytes("ro/object").await.unwrap_or_else(|e| fail(reader, "get", e));
    if bytes != body || meta.size != body.len() as u64 {
        fail(reader, "get", format!("read {bytes:?} ({} bytes)", meta.size));
    }
    let head = reader.head("ro/object").await.unwrap_or_else(|e| fail(reader, "head", e));
    if head.size != body.len() as u64 {
        fail(reader, "head", format!("size {}", head.size));
    }
    let part = reader.get_range("ro/object", ByteRange::Bounded { start: 5, end: 10 }).await.unwrap();
    if &part[..] != b"56789" {
        fail(reader, "range", format!("{part:?}"));
    }
    let tail = reader.get_range("ro/object", ByteRange::Suffix(3)).await.unwrap();
    if &tail[..] != b"hij" {
        fail(reader, "suffix range", format!("{tail:?}"));
    }
    match reader.get("ro/missing", GetOptions::default()).await {
        Err(StoreError::NotFound { .. }) => {}
        other => fail(reader, "missing object", format!("{other:?}")),
    }
    let etag = meta.etag.unwrap_or_else(|| fail(reader, "etag", "none"));
    match reader.get("ro/object", GetOptions { range: None, if_none_match: Some(etag.clone()) }).await {
        Err(StoreError::NotModified { .. }) => {}
        other => fail(reader, "conditional get", format!("{other:?}")),
    }
    // A change is seen by the same conditional read, however soon it comes
    // (an origin's Last-Modified has one-second resolution).
    let changed = Bytes::from_static(b"changed");
    let mode = PutMode::Update(written.etag.expect("the writer's ETag"));
    writer.put("ro/object", Payload::Bytes(changed.clone()), mode).await.unwrap();
    let after = match reader.get("ro/object", GetOptions { range: None, if_none_match: Some(etag) }).await {
        Ok(result) => result.bytes().await,
        Err(e) => Err(e),
    };
    match after {
        Ok(bytes) if bytes == changed => {}
        other => fail(reader, "conditional get after a change", format!("{other:?}")),
    }
    match reader.put("ro/new", Payload::Bytes(body), PutMode::Create).await {
        Err(StoreError::ReadOnly { .. }) => {}
        other => fail(reader, "writes refused", format!("{other:?}")),
    }
    match reader.delete(&["ro/object".to_string()]).await {
        Err(StoreError::ReadOnly { .. }) => {}
        other => fail(reader, "deletes refused", format!("{other:?}")),
    }
}

/// A created object reads back whole, with its size and an ETag.
pub async fn put_get_head_round_trip(store: &dyn Store) {
    let body = Bytes::from_static(b"hello, segment");
    let written = store
        .put("a/b/hello", Payload::Bytes(body.clone()), PutMode::Create)
        .await
        .unwrap_or_else(|e| fail(store, "put", e));
    let (bytes, meta) = store.get_bytes("a/b/hello").await.unwrap_or_else(|e| fail(store, "get", e));
    if bytes != body {
        fail(store, "get", format!("read {bytes:?}"));
    }
    if meta.size != body.len() as u64 || meta.etag.is_none() || meta.etag != written.etag {
        fail(store, "get metadata", format!("{meta:?} vs written {written:?}"));
    }
    let head = store.head("a/b/hello").await.unwrap_or_else(|e| fail(store, "head", e));
    if head != meta {
        fail(store, "head", format!("{head:?} vs {meta:?}"));
    }
    // Empty objects exist too.
    store
        .put("a/empty", Payload::Bytes(Bytes::new()), PutMode::Create)
        .await
        .unwrap_or_else(|e| fail(store, "put empty", e));
    let (bytes, meta) = store.get_bytes("a/empty").await.unwrap_or_else(|e| fail(store, "get empty", e));
    if !bytes.is_empty() || meta.size != 0 {
        fail(store, "get empty", format!("{meta:?}"));
    }
}

/// A missing object is `NotFound` for get, head and range reads.
pub async fn missing_objects_are_not_found(store: &dyn Store) {
    for result in [
        store.get("nothing/here", GetOptions::default()).await.map(|_| ()),
        store.head("nothing/here").await.map(|_| ()),
        store.get_range("nothing/here", ByteRange::From(0)).await.map(|_| ()),
    ] {
        match result {
            Err(StoreError::NotFound { .. }) => {}
            other => fail(store, "missing object", format!("{other:?}")),
        }
    }
}

/// Create-if-absent refuses a taken key and leaves the object unchanged.
pub async fn create_refuses_an_existing_key(store: &dyn Store) {
    store.put("create/once", b"first".to_vec().into(), PutMode::Create).await.unwrap();
    match store.put("create/once", b"second".to_vec().into(), PutMode::Create).await {
        Err(StoreError::AlreadyExists { .. }) => {}
        other => fail(store, "create twice", format!("{other:?}")),
    }
    let (bytes, _) = store.get_bytes("create/once").await.unwrap();
    if &bytes[..] != b"first" {
        fail(store, "create twice", format!("object changed to {bytes:?}"));
    }
}

/// Update succeeds with the current ETag and refuses a stale one or a
/// missing object.
pub async fn compare_and_swap(store: &dyn Store) {
    let v1 = store.put("cas/doc", b"v1".to_vec().into(), PutMode::Create).await.unwrap();
    let v1_etag = v1.etag.clone().unwrap_or_else(|| fail(store, "cas", "no etag"));
    let v2 = store
        .put("cas/doc", b"version 2".to_vec().into(), PutMode::Update(v1_etag.clone()))
        .await
        .unwrap_or_else(|e| fail(store, "cas with current etag", e));
    if v2.etag == v1.etag {
        fail(store, "cas", "etag did not change");
    }
    match store.put("cas/doc", b"v3".to_vec().into(), PutMode::Update(v1_etag.clone())).await {
        Err(StoreError::PreconditionFailed { .. }) => {}
        other => fail(store, "stale etag refused", format!("{other:?}")),
    }
    let (bytes, _) = store.get_bytes("cas/doc").await.unwrap();
    if &bytes[..] != b"version 2" {
        fail(store, "stale etag refused", format!("object changed to {bytes:?}"));
    }
    match store.put("cas/absent", b"x".to_vec().into(), PutMode::Update(v1_etag)).await {
        Err(StoreError::PreconditionFailed { .. }) => {}
        other => fail(store, "update of a missing object", format!("{other:?}")),
    }
}

/// A get with the current ETag is `NotModified`; with an old one it reads.
pub async fn conditional_get(store: &dyn Store) {
    let v1 = store.put("cond/doc", b"one".to_vec().into(), PutMode::Create).await.unwrap();
    let etag = v1.etag.unwrap();
    match store.get("cond/doc", GetOptions { range: None, if_none_match: Some(etag.clone()) }).await {
        Err(StoreError::NotModified { .. }) => {}
        other => fail(store, "conditional get unchanged", format!("{other:?}")),
    }
    store.put("cond/doc", b"two".to_vec().into(), PutMode::Update(etag.clone())).await.unwrap();
    let result = store
        .get("cond/doc", GetOptions { range: None, if_none_match: Some(etag) })
        .await
        .unwrap_or_else(|e| fail(store, "conditional get changed", e));
    let bytes = result.bytes().await.unwrap();
    if &bytes[..] != b"two" {
        fail(store, "conditional get changed", format!("{bytes:?}"));
    }
}

/// Bounded, open-ended and suffix ranges return exactly their bytes.
pub async fn byte_ranges(store: &dyn Store) {
    let body: Vec<u8> = (0..=255u8).collect();
    store.put("range/obj", body.clone().into(), PutMode::Create).await.unwrap();
    for (range, expected) in [
        (ByteRange::Bounded { start: 10, end: 20 }, &body[10..20]),
        (ByteRange::Bounded { start: 250, end: 1000 }, &body[250..]),
        (ByteRange::From(200), &body[200..]),
        (ByteRange::Suffix(16), &body[240..]),
        (ByteRange::Suffix(1000), &body[..]),
    ] {
        let result = store
            .get("range/obj", GetOptions { range: Some(range), if_none_match: None })
            .await
            .unwrap_or_else(|e| fail(store, "range", format!("{range:?}: {e}")));
        if result.meta.size != 256 {
            fail(store, "range metadata", format!("{range:?}: size {}", result.meta.size));
        }
        let bytes = result.bytes().await.unwrap();
        if &bytes[..] != expected {
            fail(store, "range", format!("{range:?}: got {} bytes", bytes.len()));
        }
    }
    match store.get_range("range/obj", ByteRange::From(300)).await {
        Err(StoreError::InvalidRange { .. }) => {}
        other => fail(store, "range past the end", format!("{other:?}")),
    }
}

/// Deleting removes objects; deleting a missing key is not an error.
pub async fn delete_is_idempotent(store: &dyn Store) {
    store.put("del/a", b"a".to_vec().into(), PutMode::Create).await.unwrap();
    store.put("del/b", b"b".to_vec().into(), PutMode::Create).await.unwrap();
    let keys = vec!["del/a".to_string(), "del/b".to_string(), "del/never".to_string()];
    store.delete(&keys).await.unwrap_or_else(|e| fail(store, "delete", e));
    store.delete(&keys).await.unwrap_or_else(|e| fail(store, "delete again", e));
    if !matches!(store.head("del/a").await, Err(StoreError::NotFound { .. })) {
        fail(store, "delete", "object still there");
    }
    // A deleted key can be created again.
    store.put("del/a", b"again".to_vec().into(), PutMode::Create).await.unwrap_or_else(|e| fail(store, "re-create", e));
}

/// Listing returns exactly the keys under a prefix, sorted, with sizes.
pub async fn list_by_prefix(store: &dyn Store) {
    for key in ["list/x/1", "list/x/2", "list/x/sub/3", "list/y/1", "listing"] {
        store.put(key, key.as_bytes().to_vec().into(), PutMode::Create).await.unwrap();
    }
    let listed = store.list("list/x/").await.unwrap_or_else(|e| fail(store, "list", e));
    let keys: Vec<&str> = listed.iter().map(|m| m.key.as_str()).collect();
    if keys != ["list/x/1", "list/x/2", "list/x/sub/3"] {
        fail(store, "list", format!("{keys:?}"));
    }
    if listed[0].size != 8 {
        fail(store, "list sizes", format!("{:?}", listed[0]));
    }
    let none = store.list("list/z/").await.unwrap();
    if !none.is_empty() {
        fail(store, "list empty", format!("{none:?}"));
    }
}

/// An object of several MiB round-trips through the streaming body.
pub async fn large_objects_stream(store: &dyn Store) {
    let body: Vec<u8> = (0..3 * 1024 * 1024 + 17).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    store
        .put("large/object", body.clone().into(), PutMode::Create)
        .await
        .unwrap_or_else(|e| fail(store, "put large", e));
    let (bytes, meta) = store.get_bytes("large/object").await.unwrap_or_else(|e| fail(store, "get large", e));
    if meta.size != body.len() as u64 || bytes[..] != body[..] {
        fail(store, "get large", format!("{} bytes differ", bytes.len()));
    }
}

// Native only: files and tokio tasks (the read-only checks run in wasm too).
#[cfg(not(target_arch = "wasm32"))]
/// A payload streamed from a local file is stored like bytes.
pub async fn file_payloads(store: &dyn Store) {
    let dir = std::env::temp_dir().join(format!("distributary-conformance-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("payload-{}", crate::clock::now_ms()));
    std::fs::write(&path, b"from a file").unwrap();
    store
        .put("file/payload", Payload::File(path.clone()), PutMode::Create)
        .await
        .unwrap_or_else(|e| fail(store, "put file", e));
    let (bytes, _) = store.get_bytes("file/payload").await.unwrap();
    if &bytes[..] != b"from a file" {
        fail(store, "put file", format!("{bytes:?}"));
    }
    if !path.exists() {
        fail(store, "put file", "the source file was removed");
    }
    let _ = std::fs::remove_file(&path);
}

/// Keys that escape the prefix or hide as dot-files are refused.
pub async fn invalid_keys_are_refused(store: &dyn Store) {
    for key in ["", "/abs", "a//b", "../escape", "a/../b", ".hidden", "a/.tmp-1"] {
        match store.put(key, b"x".to_vec().into(), PutMode::Create).await {
            Err(StoreError::InvalidKey { .. }) => {}
            other => fail(store, "invalid key", format!("{key:?}: {other:?}")),
        }
    }
}

// Native only: files and tokio tasks (the read-only checks run in wasm too).
#[cfg(not(target_arch = "wasm32"))]
/// `writers` concurrent create-if-absent of one key: exactly one wins, the
/// stored object is the winner's, whole.
pub async fn concurrent_creators_one_wins(store: Arc<dyn Store>, writers: usize) {
    let mut tasks = Vec::new();
    for i in 0..writers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let body = vec![i as u8; 64 * 1024];
            (i, store.put("race/create", body.into(), PutMode::Create).await)
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        let (i, result) = task.await.unwrap();
        match result {
            Ok(_) => winners.push(i),
            Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => fail(store.as_ref(), "concurrent create", format!("writer {i}: {e}")),
        }
    }
    if winners.len() != 1 {
        fail(store.as_ref(), "concurrent create", format!("winners {winners:?}"));
    }
    let (bytes, _) = store.get_bytes("race/create").await.unwrap();
    if bytes.len() != 64 * 1024 || bytes.iter().any(|&b| b != winners[0] as u8) {
        fail(store.as_ref(), "concurrent create", "stored object is not the winner's");
    }
}

// Native only: files and tokio tasks (the read-only checks run in wasm too).
#[cfg(not(target_arch = "wasm32"))]
/// `writers` concurrent compare-and-swaps from the same ETag: exactly one
/// wins.
pub async fn concurrent_swaps_one_wins(store: Arc<dyn Store>, writers: usize) {
    let base = store.put("race/swap", b"base".to_vec().into(), PutMode::Create).await.unwrap();
    let etag = base.etag.unwrap();
    let mut tasks = Vec::new();
    for i in 0..writers {
        let (store, etag) = (store.clone(), etag.clone());
        tasks.push(tokio::spawn(async move {
            (i, store.put("race/swap", format!("writer {i}").into_bytes().into(), PutMode::Update(etag)).await)
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        let (i, result) = task.await.unwrap();
        match result {
            Ok(_) => winners.push(i),
            Err(StoreError::PreconditionFailed { .. }) => {}
            Err(e) => fail(store.as_ref(), "concurrent swap", format!("writer {i}: {e}")),
        }
    }
    if winners.len() != 1 {
        fail(store.as_ref(), "concurrent swap", format!("winners {winners:?}"));
    }
    let (bytes, _) = store.get_bytes("race/swap").await.unwrap();
    if bytes != format!("writer {}", winners[0]).as_bytes() {
        fail(store.as_ref(), "concurrent swap", format!("stored {bytes:?}"));
    }
}
