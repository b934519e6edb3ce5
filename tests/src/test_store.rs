//! The stores a test writes and reads: a local folder ([`file_store`]), or
//! either kind by [`Kind`] ([`TestStore`]), reachable in process and by the
//! CLIs, so one test body runs on both (see [`crate::on_every_store`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use distributary_core::store::{FileStore, PutMode, Store};

use crate::bins::binary;
use crate::moto::MotoServer;

/// A folder store at `root` (created) and its `file://` URL.
pub fn file_store(root: &Path) -> (Arc<dyn Store>, String) {
    std::fs::create_dir_all(root).unwrap();
    (Arc::new(FileStore::new(root.to_path_buf())), format!("file://{}", root.display()))
}

/// The prefix of a moto test store in its bucket.
pub const MOTO_PREFIX: &str = "app";

/// The kinds of store the key tests run against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A local folder.
    File,
    /// A bucket on a real S3-compatible server (moto on loopback).
    Moto,
}

/// A fresh, empty store of one kind, reachable in process (`store`) and by
/// the CLIs (`url` and `env`).
pub struct TestStore {
    pub kind: Kind,
    pub store: Arc<dyn Store>,
    pub url: String,
    pub env: Vec<(&'static str, String)>,
    /// The folder of a `file://` store.
    pub root: Option<PathBuf>,
    /// The server behind a moto store; stopped when the test ends.
    pub moto: Option<MotoServer>,
}

impl TestStore {
    /// A store of `kind`: the folder `dir/store`, or a fresh bucket (prefix
    /// [`MOTO_PREFIX`]) on a moto server of its own.
    pub async fn new(kind: Kind, dir: &Path) -> TestStore {
        match kind {
            Kind::File => {
                let root = dir.join("store");
                let (store, url) = file_store(&root);
                TestStore { kind, store, url, env: Vec::new(), root: Some(root), moto: None }
            }
            Kind::Moto => {
                let moto = MotoServer::start();
                let bucket = moto.create_bucket();
                let store = moto.store_at(&bucket, MOTO_PREFIX).await;
                let url = moto.url(&bucket, MOTO_PREFIX);
                TestStore { kind, store, url, env: moto.env(), root: None, moto: Some(moto) }
            }
        }
    }

    /// `program` with what it needs to reach this store (credentials for moto).
    pub fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        command.envs(self.env.iter().map(|(k, v)| (*k, v.as_str())));
        command
    }

    /// Runs `distributary ARGS` against this store to completion.
    pub fn distributary(&self, args: &[&str]) -> Output {
        self.command(&binary("distributary", "distributary")).args(args).output().unwrap()
    }

    /// Replaces object `key` with `bytes`, as bit rot or a bad proxy would:
    /// in place on disk for a folder; on S3, by compare-and-swap (the only
    /// write that replaces an object).
    pub async fn overwrite(&self, key: &str, bytes: Vec<u8>) {
        match self.kind {
            Kind::File => std::fs::write(self.root.as_ref().unwrap().join(key), bytes).unwrap(),
            Kind::Moto => {
                let etag = self.store.head(key).await.unwrap().etag.expect("S3 objects have an ETag");
                self.store.put(key, bytes.into(), PutMode::Update(etag)).await.unwrap();
            }
        }
    }

    /// Flips one bit in the middle of object `key`, and checks the store
    /// now serves it so.
    pub async fn corrupt(&self, key: &str) {
        let (bytes, _) = self.store.get_bytes(key).await.unwrap();
        let mut bytes = bytes.to_vec();
        let middle = bytes.len() / 2;
        let original = bytes[middle];
        bytes[middle] ^= 0x10;
        self.overwrite(key, bytes).await;
        let (stored, _) = self.store.get_bytes(key).await.unwrap();
        assert_eq!(stored[middle], original ^ 0x10, "{key} is served corrupted");
    }
}
