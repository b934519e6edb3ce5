//! SFTP and Azure replicas in configuration files: the URL each becomes, and
//! the secret beside it.

use super::*;

#[test]
fn litestream_0_5_full_example_maps_its_azure_and_sftp_replicas() {
    let (head, tail) = LITESTREAM_05.split_at(LITESTREAM_05.find("  - path: /var/lib/app5.db").unwrap());
    let head = &head[..head.find("dbs:").unwrap()];
    let entry = |path: &str| {
        let start = tail.find(&format!("  - path: {path}")).unwrap();
        let end = tail[start + 1..].find("  - path: ").map_or(tail.len(), |end| start + 1 + end);
        parse(&format!("{head}dbs:\n{}", &tail[start..end])).unwrap()
    };
    let config = entry("/var/lib/app7.db");
    let abs = &config.dbs[0].replicas[0];
    assert_eq!(abs.url, "abs://container/db?account=myaccount&endpoint=https://myaccount.blob.core.windows.net/");
    assert_eq!(abs.credentials, Some(Credentials::Abs(AbsCredential::AccountKey("azure-key".into()))));
    assert_notice(&config, &["sas-token", "account-key"]);
    let config = entry("/var/lib/app8.db");
    let sftp = &config.dbs[0].replicas[0];
    assert_eq!(
        sftp.url,
        "sftp://backup-user@example.com:22/backup/db?key-path=/etc/litestream/sftp_key&host-key=ssh-ed25519%20AAAA"
    );
    assert_eq!(sftp.credentials, Some(Credentials::SftpPassword("sftp-password".into())));
    assert_notice(&config, &["concurrent-writes", "one object at a time"]);
}

/// Litestream's URL forms and fields for SFTP and Azure, and where their
/// secrets go: beside the URL, never in it.
#[test]
fn sftp_and_abs_replicas_from_urls_and_fields() {
    let one = |replica: &str| parse(&format!("dbs:\n  - path: /a.db\n    replica:\n{replica}")).unwrap();
    let replica = |replica: &str| one(replica).dbs[0].replicas[0].clone();
    // Litestream's sftp URL with a password: the password leaves the URL.
    let r = replica("      url: sftp://bob:p%40ss@files.example.com:2222/srv/db\n");
    assert_eq!(r.url, "sftp://bob@files.example.com:2222/srv/db");
    assert_eq!(r.credentials, Some(Credentials::SftpPassword("p@ss".into())));
    // Fields; a relative path is in the login folder, as in Litestream.
    let r =
        replica("      type: sftp\n      host: h\n      user: u\n      path: backups/db\n      key-path: ~/.ssh/k\n");
    assert_eq!(r.url, "sftp://u@h/~/backups/db?key-path=/home/app/.ssh/k");
    assert_eq!(r.credentials, None);
    let err = error("dbs:\n  - path: /a.db\n    replica:\n      type: sftp\n      host: h\n");
    assert!(err.contains("`type: sftp` needs `user`"), "{err}");
    // Litestream's abs URL names the account before the container; 0.3's
    // names the blob endpoint's host, then the container.
    let r = replica("      url: abs://acct@box/app/db\n");
    assert_eq!(r.url, "abs://box/app/db?account=acct");
    let r = replica("      url: abs://acct@acct.blob.core.windows.net/box/db2\n");
    assert_eq!(r.url, "abs://box/db2?account=acct");
    let r = replica("      url: abs://acct@blobs.example.net/box/db2\n");
    assert_eq!(r.url, "abs://box/db2?endpoint=https://blobs.example.net&account=acct");
    let r = replica("      type: abs\n      account-name: acct\n      bucket: box\n      sas-token: sv=1&sig=2\n");
    assert_eq!(r.url, "abs://box?account=acct");
    assert_eq!(r.credentials, Some(Credentials::Abs(AbsCredential::SasToken("sv=1&sig=2".into()))));
    let err = error("dbs:\n  - path: /a.db\n    replica:\n      type: abs\n      account-name: a\n");
    assert!(err.contains("`type: abs` needs `bucket`"), "{err}");
    // A key of one backend on a replica of another is answered.
    let config = one("      url: s3://b-1/db\n      account-key: k\n      host: h\n");
    assert_notice(&config, &["account-key: a setting of abs replicas; this one is s3"]);
    assert_notice(&config, &["host: a setting of sftp replicas; this one is s3"]);
    // A secret never shows in debug output.
    assert!(!format!("{:?}", replica("      url: sftp://bob:hunter2@h/srv/db\n")).contains("hunter2"));
}
