//! The configuration file: our keys, Litestream 0.3's and 0.5's (the two
//! configurations of issue 16 and the full documented examples), and what
//! each key became.

use std::path::Path;
use std::time::Duration;

use super::*;

/// The environment the tests' files see.
fn env(name: &str) -> Option<String> {
    let value = match name {
        "AWS_ACCESS_KEY_ID" => "AKIAENV",
        "AWS_SECRET_ACCESS_KEY" => "env-secret/xxxxxxxx",
        "AZURE_ACCOUNT_KEY" => "azure-key",
        "SFTP_PASSWORD" => "sftp-password",
        "NATS_PASSWORD" => "nats-password",
        "WEBDAV_USERNAME" => "dav",
        "WEBDAV_PASSWORD" => "dav-password",
        "S3_ENDPOINT" => "http://127.0.0.1:9000",
        "BUCKET" => "my-bucket",
        "HOME" => "/home/app",
        _ => return None,
    };
    Some(value.to_string())
}

fn parse(text: &str) -> Result<Config> {
    Config::parse_with_env(text, &env)
}

/// The whole error chain.
fn error(text: &str) -> String {
    format!("{:#}", parse(text).expect_err("the configuration is refused"))
}

fn has_notice(config: &Config, needles: &[&str]) -> bool {
    config.notices.iter().any(|notice| needles.iter().all(|needle| notice.contains(needle)))
}

#[track_caller]
fn assert_notice(config: &Config, needles: &[&str]) {
    assert!(has_notice(config, needles), "no notice with {needles:?} in {:#?}", config.notices);
}

fn secs(seconds: u64) -> Option<Duration> {
    Some(Duration::from_secs(seconds))
}

fn credentials(id: &str, secret: &str) -> Option<Credentials> {
    Some(Credentials::S3 { access_key_id: id.into(), secret_access_key: secret.into() })
}

/// The text of a test file up to its marker line: the part we load.
fn before_marker(text: &str) -> &str {
    &text[..text.find("# -- backends we refuse").expect("the marker")]
}

#[test]
fn each_store_chooses_its_page_compression() {
    let config = parse(
        "dbs:\n  - path: /a.db\n    replicas:\n      - url: file:///x\n      - url: file:///y\n        compression: zstd:9\n",
    )
    .unwrap();
    let replicas = &config.dbs[0].replicas;
    assert_eq!(replicas[0].compression, Compression::Lz4, "the default");
    assert_eq!(replicas[1].compression, Compression::Zstd { level: 9 });
    let err = error("dbs:\n  - path: /a.db\n    replica:\n      url: file:///x\n      compression: brotli\n");
    assert!(err.contains("dbs[0].replica.compression") && err.contains("expected lz4, zstd or zstd:LEVEL"), "{err}");
}

#[test]
fn parses_our_own_configs() {
    let config = parse(
        "dbs:\n  - path: /tmp/app.db\n    replicas:\n      - url: file:///tmp/store\n        sync-interval: 250ms\n      - type: s3\n        bucket: my-bucket\n        path: /app/\n        endpoint: ${S3_ENDPOINT}\n",
    )
    .unwrap();
    let db = &config.dbs[0];
    assert_eq!(db.replicas[0].url, "file:///tmp/store");
    assert_eq!(db.replicas[0].sync_interval, Duration::from_millis(250));
    assert_eq!(db.replicas[1].url, "s3://my-bucket/app?endpoint=http://127.0.0.1:9000");
    assert_eq!(db.replicas[1].sync_interval, DEFAULT_SYNC_INTERVAL);
    assert_eq!(db.replicas[1].credentials, None);
    assert_eq!(db.checkpoint_frames, 1_000);
    assert_eq!(db.truncate_bytes, 64 << 20);
    assert_eq!(db.compaction, CompactionSettings::default());
    assert!(config.notices.is_empty(), "{:?}", config.notices);

    // Our URLs are kept as written.
    let url = "s3://my-bucket/app-db?region=us-east-1&endpoint=http%3A%2F%2F127.0.0.1%3A9000&path-style=true";
    let config = parse(&format!("dbs:\n  - path: /a.db\n    replicas:\n      - url: {url}\n")).unwrap();
    assert_eq!(config.dbs[0].replicas[0].url, url);
}

#[test]
fn variables_in_comments_are_not_expanded() {
    // Regression: `${VAR}` inside a comment was expanded, and failed
    // when the variable was unset.
    let err = error(
        "# endpoint: ${DISTRIBUTARY_SURELY_UNSET}\ndbs:\n  - path: /tmp/a.db # was ${DISTRIBUTARY_SURELY_UNSET}\n    replicas:\n      - url: \"file:///tmp/a#${DISTRIBUTARY_TEST_HOME}\"  # ${DISTRIBUTARY_SURELY_UNSET}\n",
    );
    // The quoted `#` is not a comment: that variable is still expanded.
    assert!(err.contains("DISTRIBUTARY_TEST_HOME is not set") && err.contains("line 5"), "{err}");
    let config = parse(
        "# ${DISTRIBUTARY_SURELY_UNSET}\ndbs:\n  - path: /tmp/a#b.db # ${DISTRIBUTARY_SURELY_UNSET}\n    replicas:\n      - url: file:///tmp/a  # ${DISTRIBUTARY_SURELY_UNSET}\n",
    )
    .unwrap();
    // A `#` inside a word is not a comment either.
    assert_eq!(config.dbs[0].path, Path::new("/tmp/a#b.db"));
    assert_eq!(config.dbs[0].replicas[0].url, "file:///tmp/a");
}

#[test]
fn variables_bare_braced_and_pid() {
    let config =
        parse("dbs:\n  - path: $HOME/app.db\n    replica:\n      url: s3://${BUCKET}/$PID/app?endpoint=$S3_ENDPOINT\n")
            .unwrap();
    let db = &config.dbs[0];
    assert_eq!(db.path, Path::new("/home/app/app.db"));
    let pid = std::process::id();
    assert_eq!(db.replicas[0].url, format!("s3://my-bucket/{pid}/app?endpoint=http://127.0.0.1:9000"));
    // Unset is an error naming the variable and its line, where Litestream
    // would write an empty string.
    let err = error("dbs:\n  - path: /a.db\n    replica:\n      url: s3://$NO_SUCH_BUCKET/app\n");
    assert!(err.contains("NO_SUCH_BUCKET is not set") && err.contains("line 4"), "{err}");
    // Through the real environment too.
    let config = Config::parse("dbs:\n  - path: /a.db\n    replica:\n      path: /backup/$PID\n").unwrap();
    assert_eq!(config.dbs[0].replicas[0].url, format!("file:///backup/{pid}"));
}

#[test]
fn unknown_keys_name_the_key_and_line() {
    let err = error("dbs:\n  - path: /tmp/a.db\n    replicaz: []\n");
    assert!(err.contains("replicaz") && err.contains("line 3"), "{err}");
    let err = error("dbs:\n  - path: /tmp/a.db\n    replicas:\n      - url: file:///x\n        sync-intervall: 1s\n");
    assert!(err.contains("sync-intervall") && err.contains("line 5"), "{err}");
    // Without serde's list of the dozens of keys it expected.
    assert!(!err.contains("expected one of"), "{err}");
    let err = error("dbs: []\nretention-check-intervall: 1h\n");
    assert!(err.contains("retention-check-intervall") && err.contains("line 2"), "{err}");
}

#[test]
fn bad_values_say_what_is_wrong() {
    let err = error("dbs:\n  - path: /a.db\n    replicas:\n      - url: file:///x\n        sync-interval: 10ms\n");
    assert!(err.contains("below the minimum"), "{err}");
    let err = error("dbs:\n  - path: /a.db\n    replicas:\n      - type: ftp\n");
    assert!(err.contains("unknown replica type"), "{err}");
    let err = error("dbs:\n  - path: /a.db\n    replicas:\n      - url: file:///x\n        retention: 0s\n");
    assert!(err.contains("retention: must be greater than 0"), "{err}");
    let err = error("logging:\n  level: loud\ndbs:\n  - path: /a.db\n    replica:\n      path: /x\n");
    assert!(err.contains("logging.level") && err.contains("loud"), "{err}");
    let err = error("dbs:\n  - path: /a.db\n    replica:\n      path: backup\n");
    assert!(err.contains("must be absolute"), "{err}");
    let err = error("dbs:\n  - path: /a.db\n    replica:\n      type: s3\n      access-key-id: AKIA\n");
    assert!(err.contains("`type: s3` needs `bucket`"), "{err}");
    let err =
        error("dbs:\n  - path: /a.db\n    replica:\n      type: s3\n      bucket: b-1\n      access-key-id: AKIA\n");
    assert!(err.contains("access-key-id is given without secret-access-key"), "{err}");
    let err = error("dbs: []\n");
    assert!(err.contains("no databases"), "{err}");
}

/// The first configuration of issue 16: its SFTP replica (refused before
/// issue 21) becomes an `sftp://` store with the key file in its URL.
#[test]
fn issue_16_config_maps_its_sftp_replica() {
    let config = parse(ISSUE_16_FIRST).unwrap();
    let sftp = &config.dbs[0].replicas[1];
    assert_eq!(sftp.url, "sftp://backup@backup-server:22/backups/app.db?key-path=/root/.ssh/id_rsa");
    assert_eq!(sftp.credentials, None);
}

const ISSUE_16_FIRST: &str = "\
dbs:
  - path: /data/app.db
    replicas:
      - type: s3
        bucket: my-backup-bucket
        path: backups/app.db
        region: ap-southeast-1
        retention: 720h # 30 days
        retention-check-interval: 1h
        sync-interval: 1s # Near real-time
      - type: sftp
        host: backup-server:22
        user: backup
        path: /backups/app.db
        key-path: /root/.ssh/id_rsa
";

/// The same configuration without the SFTP replica: what each key became.
#[test]
fn issue_16_config_without_sftp_maps_every_key() {
    let text = &ISSUE_16_FIRST[..ISSUE_16_FIRST.find("      - type: sftp").unwrap()];
    let config = parse(text).unwrap();
    let db = &config.dbs[0];
    assert_eq!(db.path, Path::new("/data/app.db"));
    assert_eq!(db.folder, None);
    assert_eq!(db.replicas.len(), 1);
    let replica = &db.replicas[0];
    // type, bucket, path, region
    assert_eq!(replica.url, "s3://my-backup-bucket/backups/app.db?region=ap-southeast-1");
    // sync-interval
    assert_eq!(replica.sync_interval, Duration::from_secs(1));
    assert_eq!(replica.credentials, None);
    // retention, retention-check-interval
    assert_eq!(db.compaction.mode, CompactionMode::Lambda);
    assert_eq!(db.compaction.snapshot_retention, secs(720 * 3600));
    assert_eq!(db.compaction.interval, secs(3600));
    assert_eq!(db.compaction.from[&CompactionKey::SnapshotRetention], "dbs[0].replicas[0].retention");
    assert_eq!(
        db.compaction.lambda_settings(),
        vec![("DISTRIBUTARY_SNAPSHOT_RETENTION", "720h".to_string())],
        "the run interval has no Lambda setting"
    );
    // The interval is answered, not dropped.
    assert_notice(&config, &["dbs[0].replicas[0].retention-check-interval", "1h", "Lambda compacts on every upload"]);
    let instructions = config.lambda_instructions();
    assert_eq!(instructions.len(), 1, "{instructions:?}");
    for needle in [
        "the compactor is the Lambda",
        "DISTRIBUTARY_SNAPSHOT_RETENTION=720h (from dbs[0].replicas[0].retention)",
        "infra/template.yaml parameter SnapshotRetention",
        "/data/app.db",
        "distributary compact --watch --snapshot-retention 720h STORE_URL",
        "compaction: local",
    ] {
        assert!(instructions[0].contains(needle), "{needle:?} not in {}", instructions[0]);
    }
}

/// The second configuration of issue 16: Litestream 0.5's single `replica`.
#[test]
fn issue_16_config_with_a_single_replica_loads() {
    let config = parse("dbs:\n  - path: /data/app.db\n    replica:\n      url: s3://my-bucket/app\n").unwrap();
    let db = &config.dbs[0];
    assert_eq!(db.replicas.len(), 1);
    assert_eq!(db.replicas[0].url, "s3://my-bucket/app");
    assert_eq!(db.replicas[0].sync_interval, DEFAULT_SYNC_INTERVAL);
    assert!(config.notices.is_empty(), "{:?}", config.notices);
    assert!(config.lambda_instructions().is_empty());
}

const LITESTREAM_03: &str = include_str!("testdata/litestream-0.3.yml");
const LITESTREAM_05: &str = include_str!("testdata/litestream-0.5.yml");

#[test]
fn litestream_0_3_full_example_refuses_its_other_backends() {
    let err = error(LITESTREAM_03);
    assert!(err.contains("dbs[1] (/var/lib/db2).replicas[2]"), "{err}");
    assert!(err.contains("replica type gcs (Google Cloud Storage) is not supported"), "{err}");
    assert!(err.contains("endpoint https://storage.googleapis.com and HMAC keys"), "{err}");
}

#[test]
fn litestream_0_3_full_example_maps_every_key() {
    let config = parse(before_marker(LITESTREAM_03)).unwrap();
    // Global keys: addr, exec, logging.
    assert_eq!(config.metrics_addr.as_deref(), Some("0.0.0.0:9090"));
    assert_notice(&config, &["addr \":9090\"", "every interface"]);
    assert_eq!(config.exec.as_deref(), Some("myapp -config /etc/myapp.conf"));
    assert_eq!(config.logging, Logging { level: Some(LogLevel::Debug), format: Some(LogFormat::Json) });
    assert_notice(&config, &["logging.stderr", "standard error"]);
    assert_eq!(config.dbs.len(), 2);

    // Database keys.
    let db = &config.dbs[0];
    assert_eq!(db.path, Path::new("/var/lib/db"));
    assert_eq!(db.checkpoint_frames, 500, "min-checkpoint-page-count");
    assert_eq!(db.truncate_bytes, 32 + 5_000 * (4096 + 24), "max-checkpoint-page-count, in 4 KiB pages");
    let label = "dbs[0] (/var/lib/db)";
    assert_notice(&config, &[label, "max-checkpoint-page-count: 5000 pages", "4096-byte pages"]);
    assert_notice(&config, &[label, "meta-path", "/var/lib/db-distributary/"]);
    assert_notice(&config, &[label, "monitor-interval", "PRAGMA data_version"]);
    assert_notice(&config, &[label, "checkpoint-interval, busy-timeout: not needed"]);

    // Replica keys: url with region and its own keys over the global ones.
    let [by_url, spelt_out, folder] = &db.replicas[..] else { panic!("{:?}", db.replicas) };
    assert_eq!(by_url.url, "s3://mybkt.litestream.io/db?region=us-east-1");
    assert_eq!(by_url.credentials, credentials("AKIAREPLICA", "replica-secret/xxxxxxxx"));
    // type, name, bucket, path, endpoint, region, force-path-style,
    // skip-verify: false, sync-interval; the global keys.
    assert_eq!(spelt_out.url, "s3://mybkt/db?region=nyc3&endpoint=https://nyc3.digitaloceanspaces.com&path-style=true");
    assert_eq!(spelt_out.sync_interval, Duration::from_secs(10));
    assert_eq!(spelt_out.credentials, credentials("AKIAGLOBAL", "global-secret/xxxxxxxx"));
    assert_notice(&config, &["replicas[1] (my_do_replica)", "validation-interval", "distributary verify"]);
    // A replica with a path only is a folder.
    assert_eq!(folder.url, "file:///backup/db");
    assert_eq!(folder.credentials, None);
    // retention, retention-check-interval, snapshot-interval: the two
    // replicas' retentions differ, the longest is kept, and that is said.
    assert_eq!(db.compaction.snapshot_retention, secs(72 * 3600));
    assert_eq!(db.compaction.interval, secs(3600));
    assert_eq!(db.compaction.snapshot_interval, secs(6 * 3600));
    assert_notice(&config, &[label, "dbs[0].replicas[1].retention = 72h", "dbs[0].replicas[2].retention = 24h", "72h"]);
    assert_eq!(
        db.compaction.lambda_settings(),
        vec![
            ("DISTRIBUTARY_SNAPSHOT_INTERVAL", "6h".to_string()),
            ("DISTRIBUTARY_SNAPSHOT_RETENTION", "72h".to_string())
        ]
    );

    // Early 0.3 keys, a MinIO-style URL, an empty age section.
    let db = &config.dbs[1];
    assert_notice(&config, &["dbs[1] (/var/lib/db2): monitor-delay-interval"]);
    assert_notice(&config, &["dbs[1] (/var/lib/db2): shadow-retention-count", "no shadow WAL"]);
    assert_eq!(db.replicas[0].url, "s3://mybkt/db2?region=us-east-1&endpoint=http://localhost:9000&path-style=true");
    assert_eq!(db.replicas[1].url, "file:///backup/db2");
    assert!(db.compaction.is_empty());
    assert_notice(&config, &["dbs[0].replicas[1].retention-check-interval: 1h", "Lambda compacts on every upload"]);
    // No key is left unaccounted for: the lines above are all there is.
    assert_eq!(config.notices.len(), 11, "{:#?}", config.notices);
}

#[test]
fn litestream_0_5_full_example_refuses_its_other_backends() {
    let err = error(LITESTREAM_05);
    assert!(err.contains("dbs[4] (/var/lib/app5.db).replica"), "{err}");
    assert!(err.contains("replica type nats (NATS JetStream object stores) is not supported"), "{err}");
    // Each database after the marker is refused on its own, by name.
    let (head, tail) = LITESTREAM_05.split_at(LITESTREAM_05.find("  - path: /var/lib/app5.db").unwrap());
    let head = &head[..head.find("dbs:").unwrap()];
    for (entry, needle) in tail.split("  - path: ").skip(1).zip(["nats", "gs", "abs", "sftp", "webdav", "oss"]) {
        let text = format!("{head}dbs:\n  - path: {entry}");
        match needle {
            "abs" | "sftp" => assert!(parse(&text).is_ok(), "{needle} is read: {:#}", parse(&text).unwrap_err()),
            _ => assert!(error(&text).contains(&format!("replica type {needle} (")), "{needle}: {}", error(&text)),
        }
    }
}

#[test]
fn litestream_0_5_full_example_maps_every_key() {
    let config = parse(before_marker(LITESTREAM_05)).unwrap();
    // addr, mcp-addr, exec, logging, socket and the other global keys.
    assert_eq!(config.metrics_addr.as_deref(), Some("0.0.0.0:9090"));
    assert_eq!(config.exec.as_deref(), Some("myapp -config /etc/myapp.conf"));
    assert_eq!(config.logging, Logging { level: Some(LogLevel::Warn), format: Some(LogFormat::Text) });
    for needles in [
        &["mcp-addr", "/status"][..],
        &["socket", "no control socket"],
        &["validation.interval", "distributary verify"],
        &["validation-interval", "distributary verify"],
        &["l0-retention-check-interval", "every run"],
        &["verify-compaction", "distributary verify"],
        &["heartbeat-url", "no heartbeat"],
        &["shutdown-sync-timeout, shutdown-sync-interval", "uploads everything captured"],
        &["auto-recover", "catch-up segment"],
        &["sign-payload", "signed by the AWS SDK"],
        &["require-content-md5", "own checksums"],
        &["part-size", "one PUT"],
        &["concurrency", "one PUT"],
        &["levels[1..] (1h, 24h)", "one level, L1"],
    ] {
        assert_notice(&config, needles);
    }
    // The Azure and SFTP defaults wait for such replicas; NATS's have none.
    assert_notice(&config, &["concurrent-writes", "one object at a time"]);
    for key in ["account-name", "account-key", "host", "user", "password", "key-path"] {
        assert!(!has_notice(&config, &[&format!("{key}:")]), "{key}: {:#?}", config.notices);
    }
    for key in ["username", "tls", "root-cas", "max-reconnects", "reconnect-wait", "timeout"] {
        assert_notice(&config, &[key, "replicas, which are not supported; no effect"]);
    }
    assert!(!has_notice(&config, &["logging.stderr"]), "stderr: true is what we do");

    // Global compaction keys: levels[0], snapshot, l0-retention.
    let expected = CompactionSettings {
        mode: CompactionMode::Lambda,
        l1_window: secs(300),
        snapshot_interval: secs(3600),
        snapshot_retention: secs(24 * 3600),
        l0_retention: secs(600),
        interval: None,
        from: [
            (CompactionKey::L1Window, "levels[0].interval"),
            (CompactionKey::SnapshotInterval, "snapshot.interval"),
            (CompactionKey::SnapshotRetention, "snapshot.retention"),
            (CompactionKey::L0Retention, "l0-retention"),
        ]
        .into_iter()
        .map(|(key, from)| (key, from.to_string()))
        .collect(),
    };
    for db in &config.dbs {
        assert_eq!(db.compaction, expected, "{}", db.path.display());
    }
    // Every database has the same settings: one line for the Lambda.
    let instructions = config.lambda_instructions();
    assert_eq!(instructions.len(), 1, "{instructions:?}");
    for needle in [
        "DISTRIBUTARY_L1_WINDOW=5m (from levels[0].interval)",
        "DISTRIBUTARY_SNAPSHOT_INTERVAL=1h (from snapshot.interval)",
        "DISTRIBUTARY_SNAPSHOT_RETENTION=24h (from snapshot.retention)",
        "DISTRIBUTARY_L0_RETENTION=10m (from l0-retention)",
        "parameters L1Window, SnapshotInterval, SnapshotRetention, L0Retention",
        "/var/lib/app1.db, /var/lib/app2.db, /var/lib/app3.db, /var/lib/tenants",
        "--watch --l1-window 5m --snapshot-interval 1h --snapshot-retention 24h --l0-retention 10m STORE_URL",
    ] {
        assert!(instructions[0].contains(needle), "{needle:?} not in {}", instructions[0]);
    }

    // Database keys; the sqlite3:// prefix is taken off.
    let db = &config.dbs[0];
    assert_eq!(db.path, Path::new("/var/lib/app1.db"));
    assert_eq!(db.checkpoint_frames, 500);
    assert_eq!(db.truncate_bytes, 32 + 50_000 * (4096 + 24), "truncate-page-n");
    let label = "dbs[0] (/var/lib/app1.db)";
    for key in ["meta-path", "monitor-interval", "checkpoint-interval", "busy-timeout", "truncate-page-n: 50000 pages"]
    {
        assert_notice(&config, &[label, key]);
    }
    // The global S3 defaults under the replica's own region and sync-interval.
    let replica = &db.replicas[0];
    assert_eq!(
        replica.url,
        "s3://mybucket/app1?region=us-east-1&endpoint=https://custom.endpoint.com&path-style=false"
    );
    assert_eq!(replica.sync_interval, Duration::from_secs(1));
    assert_eq!(replica.credentials, credentials("AKIAENV", "env-secret/xxxxxxxx"));

    // Tigris: an endpoint without a scheme, its own keys, a name.
    let replica = &config.dbs[1].replicas[0];
    assert_eq!(replica.url, "s3://mybucket/app2?region=auto&endpoint=https://fly.storage.tigris.dev&path-style=false");
    assert_eq!(replica.sync_interval, Duration::from_secs(5), "the global sync-interval");
    assert_eq!(replica.credentials, credentials("tid_xxxx", "tsec_xxxx"));
    assert_notice(&config, &["dbs[1] (/var/lib/app2.db).replica (tigris)", "require-content-md5"]);

    // A folder by default; the deprecated list.
    let db = &config.dbs[2];
    assert_eq!(db.replicas[0].url, "file:///backup/app3");
    assert_eq!(db.replicas[1].url, "file:///backup/app3-copy");
    assert_eq!(db.replicas[0].credentials, None);

    // dir, pattern, recursive, watch; the global bucket.
    let db = &config.dbs[3];
    assert_eq!(db.path, Path::new("/var/lib/tenants"));
    assert_eq!(db.folder, Some(DbFolder { pattern: "*.db".into(), recursive: true, watch: true }));
    assert_eq!(
        db.replicas[0].url,
        "s3://default-bucket/tenants?region=us-west-2&endpoint=https://custom.endpoint.com&path-style=false"
    );
}

#[test]
fn singular_replica_and_the_list_are_one_or_the_other() {
    let config = parse("dbs:\n  - path: /a.db\n    replica:\n      type: file\n      path: /backup/a\n").unwrap();
    assert_eq!(config.dbs[0].replicas.len(), 1);
    let err =
        error("dbs:\n  - path: /a.db\n    replica:\n      path: /backup/a\n    replicas:\n      - path: /backup/b\n");
    assert!(err.contains("dbs[0] (/a.db): give `replica` (one store) or `replicas` (a list), not both"), "{err}");
    let err = error("dbs:\n  - path: /a.db\n");
    assert!(err.contains("no store"), "{err}");
    let err = error("dbs:\n  - path: /a.db\n    replicas: []\n");
    assert!(err.contains("no replicas"), "{err}");
}

#[test]
fn refusals_name_what_and_offer_the_nearest_alternative() {
    let db = "dbs:\n  - path: /a.db\n    replica:\n";
    for (replica, needles) in [
        ("      type: gcs\n      bucket: b\n", &["replica type gcs", "endpoint https://storage.googleapis.com"][..]),
        ("      type: gs\n      bucket: b\n", &["replica type gs", "HMAC keys (access-key-id/secret-access-key)"]),
        ("      url: gs://bucket/db\n", &["replica type gs (Google Cloud Storage)", "type s3"]),
        ("      type: webdav\n      webdav-url: https://x\n", &["replica type webdav (WebDAV)", "davfs2"]),
        ("      url: webdavs://user:pw@example.com/db\n", &["replica type webdavs", "rclone mount"]),
        ("      url: nats://nats:4222/bucket\n", &["replica type nats", "type s3 with endpoint"]),
        ("      type: oss\n      bucket: b\n", &["replica type oss (Alibaba Cloud OSS)", "aliyuncs.com"]),
        (
            "      url: s3://b-1/db\n      age:\n        recipients: [age1xxxx]\n",
            &["age encryption is not supported: use encryption-key-file (AES-256-GCM), see docs/REPLICATE.md"],
        ),
        (
            "      url: s3://b-1/db\n      skip-verify: true\n",
            &["skip-verify is not supported: add the endpoint's CA to the trust store (AWS_CA_BUNDLE / SSL_CERT_FILE)"],
        ),
        ("      url: s3://b-1/db?skipVerify=true\n", &["skip-verify is not supported"]),
        ("      url: s3://b-1/db\n      sse-kms-key-id: k\n", &["sse-kms-key-id", "bucket's default encryption"]),
        ("      url: s3://b-1/db\n      sse-customer-key: k\n", &["sse-customer-key", "encryption-key-file"]),
        ("      type: file\n      url: s3://b-1/db\n", &["`type: file` does not match the url's scheme s3://"]),
    ] {
        let err = error(&format!("{db}{replica}"));
        assert!(err.contains("dbs[0] (/a.db).replica"), "{replica}: {err}");
        for needle in needles {
            assert!(err.contains(needle), "{replica}: {needle:?} not in {err}");
        }
    }
    // At the top level, too.
    let err = error("age:\n  identities: [AGE-SECRET-KEY-1]\ndbs:\n  - path: /a.db\n    replica:\n      path: /b\n");
    assert!(err.contains("age encryption is not supported"), "{err}");
    let err = error("skip-verify: true\ndbs:\n  - path: /a.db\n    replica:\n      path: /b\n");
    assert!(err.contains("skip-verify is not supported"), "{err}");
    // Restoring on start is a separate step here.
    let err = error("dbs:\n  - path: /a.db\n    restore-if-db-not-exists: true\n    replica:\n      path: /b\n");
    assert!(err.contains("restore-if-db-not-exists is not supported") && err.contains("--if-db-not-exists"), "{err}");
}

#[test]
fn compaction_mode_and_overrides() {
    // The database's mode over the file's; a replica's retention over the
    // file's snapshot.retention.
    let config = parse(
        "compaction: local\nsnapshot:\n  retention: 24h\nl0-retention: 1m\ndbs:\n  - path: /a.db\n    replica:\n      path: /a\n      retention: 48h\n  - path: /b.db\n    compaction: lambda\n    replica:\n      path: /b\n",
    )
    .unwrap();
    let [a, b] = &config.dbs[..] else { panic!() };
    assert_eq!(a.compaction.mode, CompactionMode::Local);
    assert_eq!(a.compaction.snapshot_retention, secs(48 * 3600));
    assert_eq!(a.compaction.from[&CompactionKey::SnapshotRetention], "dbs[0].replica.retention");
    assert_eq!(a.compaction.l0_retention, secs(60));
    assert_eq!(b.compaction.mode, CompactionMode::Lambda);
    assert_eq!(b.compaction.snapshot_retention, secs(24 * 3600));
    // Only the Lambda's database gets a line.
    let instructions = config.lambda_instructions();
    assert_eq!(instructions.len(), 1, "{instructions:?}");
    assert!(instructions[0].contains("for /b.db;"), "{}", instructions[0]);
    assert!(instructions[0].contains("DISTRIBUTARY_SNAPSHOT_RETENTION=24h (from snapshot.retention)"));
    assert!(instructions[0].contains("DISTRIBUTARY_L0_RETENTION=1m (from l0-retention)"));
    // With local compaction the run interval is not answered: it is used.
    let config = parse(
        "compaction: local\ndbs:\n  - path: /a.db\n    replica:\n      path: /a\n      retention-check-interval: 1m\n",
    )
    .unwrap();
    assert_eq!(config.dbs[0].compaction.interval, secs(60));
    assert!(config.notices.is_empty(), "{:?}", config.notices);
    let err = error("compaction: sometimes\ndbs: []\n");
    assert!(err.contains("sometimes") && err.contains("line 1"), "{err}");
}

#[test]
fn checkpoint_keys_are_one_setting_each() {
    let err = error(
        "dbs:\n  - path: /a.db\n    checkpoint-frames: 10\n    min-checkpoint-page-count: 20\n    replica:\n      path: /b\n",
    );
    assert!(err.contains("checkpoint-frames or min-checkpoint-page-count, not both"), "{err}");
    let err = error(
        "dbs:\n  - path: /a.db\n    truncate-size: 1MiB\n    truncate-page-n: 20\n    replica:\n      path: /b\n",
    );
    assert!(err.contains("give one of truncate-size, truncate-page-n"), "{err}");
    // Litestream turns TRUNCATE off with 0; here it keeps the WAL bounded.
    let config = parse("dbs:\n  - path: /a.db\n    truncate-page-n: 0\n    replica:\n      path: /b\n").unwrap();
    assert_eq!(config.dbs[0].truncate_bytes, 64 << 20);
    assert_notice(&config, &["truncate-page-n: 0", "cannot be turned off", "64MiB"]);
}

#[test]
fn credentials_come_from_the_file_or_litestreams_variables_and_never_show() {
    let text = "dbs:\n  - path: /a.db\n    replica:\n      url: s3://b-1/db\n";
    let litestream_env = |name: &str| match name {
        "LITESTREAM_ACCESS_KEY_ID" => Some("AKIALS".to_string()),
        "LITESTREAM_SECRET_ACCESS_KEY" => Some("ls-secret".to_string()),
        _ => None,
    };
    let config = Config::parse_with_env(text, &litestream_env).unwrap();
    assert_eq!(config.dbs[0].replicas[0].credentials, credentials("AKIALS", "ls-secret"));
    assert_notice(&config, &["LITESTREAM_ACCESS_KEY_ID"]);
    // AWS_ACCESS_KEY_ID wins (the SDK reads it), as in Litestream.
    let aws_env = |name: &str| match name {
        "AWS_ACCESS_KEY_ID" => Some("AKIAAWS".to_string()),
        other => litestream_env(other),
    };
    assert_eq!(Config::parse_with_env(text, &aws_env).unwrap().dbs[0].replicas[0].credentials, None);

    let debug = format!("{config:?}");
    assert!(debug.contains("AKIALS") && !debug.contains("ls-secret"), "{debug}");
    let config = parse(before_marker(LITESTREAM_03)).unwrap();
    for notice in &config.notices {
        assert!(!notice.contains("secret/xxxxxxxx"), "{notice}");
    }
}

#[test]
fn log_levels_in_litestreams_spellings() {
    for (text, level) in [("DEBUG", LogLevel::Debug), ("info", LogLevel::Info), ("WARNING", LogLevel::Warn)] {
        assert_eq!(LogLevel::parse(text).unwrap(), level);
    }
    let err = error("logging:\n  type: xml\ndbs: []\n");
    assert!(err.contains("logging.type") && err.contains("xml"), "{err}");
}

mod remote_stores;
