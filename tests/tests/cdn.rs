//! Readers behind a CDN (issue #18, deliverable 3): 200 simulated readers
//! poll through nginx running the CDN block of `docs/DEPLOY.md` while the
//! real replicator ships 10 commits/s to moto. The origin must see O(1)
//! requests per second, not O(readers), and every reader must end with the
//! primary's database.

use std::time::Duration;

use distributary_tests::bins::binary;
use distributary_tests::cdn_run::CdnRun;

/// Readers: enough that an uncached probe (one per reader per second)
/// would be 40 times the bound.
const READERS: usize = 200;

/// The bound on origin requests per second, averaged over the whole write
/// window, warm-up included. Steady state is about 3 per second: the probe
/// of the next segment (its cached 404 expires each second, then the
/// segment itself), and the manifest (1 s TTL) that each sync reads. The
/// warm-up (every reader's first sync: manifest, snapshot, the segments so
/// far) adds a handful in the first second, all fetched once thanks to the
/// cache lock.
const MAX_ORIGIN_REQUESTS_PER_S: f64 = 5.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_requests_stay_flat_with_200_readers_behind_the_cdn() {
    let work = tempfile::tempdir().unwrap();
    let run = CdnRun {
        readers: READERS,
        write_seconds: 20,
        rate: 10,
        distributary: binary("distributary", "distributary"),
        warmup: Duration::from_secs(3),
        // Generous: two cores shared with builds, a debug build of core.
        converge_limit: Duration::from_secs(90),
        // The probe path alone: compaction is the benchmark's option.
        compact: false,
    };
    let report = run.run(work.path()).await;
    eprintln!("{report:#?}");

    assert!(report.mismatches.is_empty(), "readers that do not hold the primary's database: {:#?}", report.mismatches);
    assert_eq!(report.converged, READERS, "readers at the final TXID {}: {report:#?}", report.final_txid);
    assert!(report.commits >= 150, "the writer committed only {}", report.commits);
    assert!(
        report.origin_requests_per_s <= MAX_ORIGIN_REQUESTS_PER_S,
        "the origin saw {:.2} requests/s ({} in {:.1} s) for {READERS} readers: {report:#?}",
        report.origin_requests_per_s,
        report.origin_requests,
        report.seconds
    );
    // The readers did poll: about one request per reader per second at least.
    assert!(
        report.reader_requests_per_s >= READERS as f64 * 0.8,
        "the readers sent only {:.0} requests/s: {report:#?}",
        report.reader_requests_per_s
    );
    assert!(report.hit_ratio > 0.95, "hit ratio {:.3}: {report:#?}", report.hit_ratio);
    // The origin counter and nginx's own log agree on what reached the origin
    // (the log's window edges may shift a request or two).
    assert!(
        report.cdn_origin_requests.abs_diff(report.origin_requests) <= 5,
        "origin counter {} vs nginx log {}",
        report.origin_requests,
        report.cdn_origin_requests
    );
}

/// The production CDN (CloudFront in `infra/template.yaml`) caches what the
/// nginx block this test measured caches, for as long: a missing object
/// (404 and 403) for `CdnMissingTtlSeconds`, the JSON documents for
/// `CdnManifestTtlSeconds`, both 1 s by default like nginx's.
#[test]
fn cloudfront_caches_missing_objects_and_documents_as_long_as_the_tested_nginx() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let template = std::fs::read_to_string(root.join("infra/template.yaml")).unwrap();
    let default_of = |parameter: &str| {
        let at = template.find(&format!("\n  {parameter}:\n")).unwrap_or_else(|| panic!("parameter {parameter}"));
        let rest = &template[at..];
        let line = rest.lines().find(|l| l.trim_start().starts_with("Default:")).unwrap();
        line.trim_start().trim_start_matches("Default:").trim().to_string()
    };
    assert_eq!(default_of("CdnMissingTtlSeconds"), "1");
    assert_eq!(default_of("CdnManifestTtlSeconds"), "1");
    for code in ["404", "403"] {
        assert!(
            template
                .contains(&format!("- ErrorCode: {code}\n            ErrorCachingMinTTL: !Ref CdnMissingTtlSeconds")),
            "CloudFront caches {code} for CdnMissingTtlSeconds"
        );
    }
    let nginx = distributary_tests::cdn::deploy_doc_cdn_block();
    assert_eq!(nginx.matches("proxy_cache_valid 403 404 1s;").count(), 2, "nginx caches 403/404 for 1 s everywhere");
    assert!(nginx.contains("proxy_cache_valid 200 1s;") && nginx.contains("proxy_cache_valid 200 365d;"));
}
