//! Infrastructure as code (issue 8): `infra/template.yaml` is lint-clean
//! (cfn-lint) and passes checkov with only annotated, necessary skips; its
//! event wiring, IAM statements and failure path are what docs/DEPLOY.md
//! says; the EventBridge event its rule delivers makes the compactor
//! compact the store; and the systemd units, the crontab line and the
//! commands and files of docs/DEPLOY.md work with the real binaries.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail, ensure};
use distributary_core::clock::ManualClock;
use distributary_core::compact::CompactConfig;
use distributary_core::manifest::read_manifest;
use distributary_core::{GenerationId, TxId};
use distributary_lambda::{Compactor, Event, handle};
use distributary_tests::bins::binary;
use distributary_tests::moto::MotoServer;
use distributary_tests::synthetic::{SyntheticDb, put};
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn template_path() -> PathBuf {
    repo().join("infra/template.yaml")
}

/// The template as JSON, short-form tags in long form: `!Ref X` becomes
/// `{"Ref": "X"}`, `!GetAtt A.B` `{"Fn::GetAtt": ["A", "B"]}`, `!Sub s`
/// `{"Fn::Sub": s}`, and so on.
fn template() -> Value {
    let text = std::fs::read_to_string(template_path()).expect("read infra/template.yaml");
    let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("infra/template.yaml is YAML");
    to_json(yaml)
}

fn to_json(value: serde_yaml_ng::Value) -> Value {
    use serde_yaml_ng::Value as Y;
    match value {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => serde_json::to_value(n).expect("number"),
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(items.into_iter().map(to_json).collect()),
        Y::Mapping(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k.as_str().map(str::to_string).unwrap_or_else(|| format!("{k:?}")), to_json(v)))
                .collect(),
        ),
        Y::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            let name = tag.trim_start_matches('!');
            let inner = to_json(tagged.value);
            match (name, inner) {
                ("Ref", inner) => json!({ "Ref": inner }),
                ("GetAtt", Value::String(s)) => {
                    let (resource, attribute) = s.split_once('.').expect("!GetAtt Resource.Attribute");
                    json!({ "Fn::GetAtt": [resource, attribute] })
                }
                (name, inner) => json!({ format!("Fn::{name}"): inner }),
            }
        }
    }
}

fn resources(template: &Value) -> &serde_json::Map<String, Value> {
    template["Resources"].as_object().expect("Resources")
}

/// `value` as a list (CloudFormation accepts a single item where a list goes).
fn list(value: &Value) -> Vec<&Value> {
    match value {
        Value::Array(items) => items.iter().collect(),
        Value::Null => Vec::new(),
        other => vec![other],
    }
}

/// The strings a policy `Resource` can take, intrinsic functions written as
/// `${...}` references: `!GetAtt B.Arn` is `${B.Arn}`, `!If` gives both
/// branches.
fn resource_strings(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items.iter().flat_map(resource_strings).collect(),
        Value::Object(map) => {
            if let Some(s) = map.get("Fn::Sub").and_then(Value::as_str) {
                vec![s.to_string()]
            } else if let Some(name) = map.get("Ref").and_then(Value::as_str) {
                vec![format!("${{{name}}}")]
            } else if let Some(parts) = map.get("Fn::GetAtt").and_then(Value::as_array) {
                vec![format!("${{{}.{}}}", parts[0].as_str().unwrap_or("?"), parts[1].as_str().unwrap_or("?"))]
            } else if let Some(branches) = map.get("Fn::If").and_then(Value::as_array) {
                branches[1..].iter().flat_map(resource_strings).collect()
            } else {
                vec![format!("{value}")]
            }
        }
        other => vec![other.to_string()],
    }
}

/// Every statement of every policy document, with the resource it is in;
/// `!If [cond, statement, AWS::NoValue]` items are unwrapped.
fn statements(template: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (name, resource) in resources(template) {
        let properties = &resource["Properties"];
        let mut documents = Vec::new();
        match resource["Type"].as_str().unwrap_or_default() {
            "AWS::IAM::ManagedPolicy" | "AWS::S3::BucketPolicy" | "AWS::SQS::QueuePolicy" | "AWS::SNS::TopicPolicy" => {
                documents.push(&properties["PolicyDocument"])
            }
            "AWS::IAM::Role" => {
                documents.extend(list(&properties["Policies"]).into_iter().map(|p| &p["PolicyDocument"]))
            }
            // A key policy's "Resource": "*" means the key itself.
            _ => {}
        }
        for document in documents {
            for statement in list(&document["Statement"]) {
                let statement = match statement.get("Fn::If").and_then(Value::as_array) {
                    Some(branches) => &branches[1],
                    None => statement,
                };
                out.push((name.clone(), statement.clone()));
            }
        }
    }
    out
}

fn actions(statement: &Value) -> Vec<String> {
    list(&statement["Action"]).into_iter().filter_map(Value::as_str).map(str::to_string).collect()
}

/// Actions that create, change or delete something (or could: wildcards).
fn is_write(action: &str) -> bool {
    let verb = action.split_once(':').map_or(action, |(_, verb)| verb);
    verb.contains('*')
        || ["Put", "Delete", "Create", "Update", "Send", "Publish", "Write", "Generate", "Encrypt", "ReEncrypt"]
            .iter()
            .any(|prefix| verb.starts_with(prefix))
}

/// EventBridge's `wildcard` matching: `*` stands for any run of characters
/// (slashes included), everything else matches itself.
fn wildcard_matches(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if parts.len() == 1 {
        return pattern == text;
    }
    if !text.starts_with(first) || !text[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

const GENERATION: &str = "019b7a1c2e00aaaaaaaaaaaaaaaaaaaa";

/// The L0 keys of a store at `prefix` match the rule's pattern; nothing the
/// compactor writes does.
fn assert_pattern_selects_l0_only(pattern: &str, prefix: &str) {
    let l0 = format!("{prefix}/{GENERATION}/l0/0000000000000002.seg");
    assert!(wildcard_matches(pattern, &l0), "{pattern} must match {l0}");
    for other in [
        format!("{prefix}/{GENERATION}/l1/0000000000000002.seg"),
        format!("{prefix}/{GENERATION}/snapshots/0000000000000009.seg"),
        format!("{prefix}/{GENERATION}/snapshots/index.json"),
        format!("{prefix}/manifest.json"),
        format!("other/{GENERATION}/l0/0000000000000002.seg"),
        format!("{prefix}/{GENERATION}/l0/0000000000000002.seg.tmp"),
    ] {
        assert!(!wildcard_matches(pattern, &other), "{pattern} must not match {other}");
    }
}

#[test]
fn wildcard_matching_follows_eventbridge() {
    assert!(wildcard_matches("a/*/l0/*.seg", "a/g/l0/1.seg"));
    assert!(wildcard_matches("a/*/l0/*.seg", "a/x/y/l0/1.seg"), "* spans slashes");
    assert!(!wildcard_matches("a/*/l0/*.seg", "a/g/l1/1.seg"));
    assert!(!wildcard_matches("a/*/l0/*.seg", "b/g/l0/1.seg"));
    assert!(!wildcard_matches("a*a", "a"), "the ends may not overlap");
}

#[test]
fn only_l0_segments_of_the_store_invoke_the_compactor() {
    let template = template();
    let resources = resources(&template);
    let bucket = &resources["Bucket"]["Properties"];
    assert_eq!(bucket["NotificationConfiguration"]["EventBridgeConfiguration"]["EventBridgeEnabled"], json!(true));
    assert!(
        bucket["NotificationConfiguration"].get("LambdaConfigurations").is_none(),
        "no S3 notification straight to Lambda: it cannot filter on the key's middle"
    );

    let rules: Vec<(&String, &Value)> = resources.iter().filter(|(_, r)| r["Type"] == "AWS::Events::Rule").collect();
    assert_eq!(rules.len(), 1, "one rule");
    let (rule_name, rule) = rules[0];
    let pattern = &rule["Properties"]["EventPattern"];
    assert_eq!(pattern["source"], json!(["aws.s3"]));
    assert_eq!(pattern["detail-type"], json!(["Object Created"]));
    assert_eq!(pattern["detail"]["bucket"]["name"], json!([{ "Ref": "Bucket" }]));
    let key = list(&pattern["detail"]["object"]["key"]);
    assert_eq!(key.len(), 1, "{key:?}");
    let wildcard = key[0]["wildcard"]["Fn::Sub"].as_str().expect("a wildcard on the key, from !Sub");
    assert_eq!(wildcard, "${StorePrefix}/*/l0/*.seg");
    for prefix in ["app", "team/app-db"] {
        assert_pattern_selects_l0_only(&wildcard.replace("${StorePrefix}", prefix), prefix);
    }
    // Prefixes that would change the pattern's meaning cannot be deployed.
    let allowed = template["Parameters"]["StorePrefix"]["AllowedPattern"].as_str().unwrap();
    // Its character classes admit no wildcard, escape, space or character
    // that URL encoding would change.
    let classes: Vec<&str> = allowed.split('[').skip(1).map(|c| c.split(']').next().unwrap()).collect();
    assert!(!classes.is_empty(), "{allowed}");
    for class in classes {
        let chars = class.replace("A-Z", "").replace("a-z", "").replace("0-9", "");
        assert!(chars.chars().all(|c| "._-".contains(c)), "{allowed}: [{class}]");
    }

    let targets = list(&rule["Properties"]["Targets"]);
    assert_eq!(targets.len(), 1);
    assert_eq!(targets[0]["Arn"], json!({ "Fn::GetAtt": ["CompactorFunction", "Arn"] }));
    let permission = resources
        .values()
        .find(|r| r["Type"] == "AWS::Lambda::Permission")
        .expect("EventBridge may invoke the function");
    assert_eq!(permission["Properties"]["Principal"], "events.amazonaws.com");
    assert_eq!(permission["Properties"]["SourceArn"], json!({ "Fn::GetAtt": [rule_name, "Arn"] }));
}

#[test]
fn failed_events_end_in_the_dead_letter_queue_that_an_alarm_watches() {
    let template = template();
    let resources = resources(&template);
    let queue = json!({ "Fn::GetAtt": ["DeadLetterQueue", "Arn"] });
    assert_eq!(resources["DeadLetterQueue"]["Type"], "AWS::SQS::Queue");

    // EventBridge invokes asynchronously: failed runs take the function's
    // async configuration, undeliverable events the target's DLQ.
    let function = &resources["CompactorFunction"]["Properties"];
    let invoke = &function["EventInvokeConfig"];
    assert_eq!(invoke["DestinationConfig"]["OnFailure"]["Type"], "SQS");
    assert_eq!(invoke["DestinationConfig"]["OnFailure"]["Destination"], queue);
    assert!(invoke["MaximumRetryAttempts"].as_u64().is_some_and(|n| n <= 2));
    let rule = resources.values().find(|r| r["Type"] == "AWS::Events::Rule").unwrap();
    let target = &list(&rule["Properties"]["Targets"])[0];
    assert_eq!(target["DeadLetterConfig"]["Arn"], queue);
    assert!(target["RetryPolicy"]["MaximumRetryAttempts"].is_number());

    // Both senders may send: the role for destinations, the queue policy for
    // the rule (and only for this rule).
    let all = statements(&template);
    let sends = |principal: &str| {
        all.iter().any(|(owner, s)| {
            s["Effect"] == "Allow"
                && actions(s).iter().any(|a| a == "sqs:SendMessage")
                && resource_strings(&s["Resource"]).contains(&"${DeadLetterQueue.Arn}".to_string())
                && match principal {
                    "role" => owner == "CompactorRole",
                    service => {
                        s["Principal"]["Service"] == service
                            && s["Condition"]["ArnEquals"]["aws:SourceArn"]
                                == json!({ "Fn::GetAtt": ["L0CreatedRule", "Arn"] })
                    }
                }
        })
    };
    assert!(sends("role"), "the compactor role may send to the queue");
    assert!(sends("events.amazonaws.com"), "the queue policy lets the rule send");
    assert_eq!(function["Role"], json!({ "Fn::GetAtt": ["CompactorRole", "Arn"] }));

    let alarm = resources
        .values()
        .find(|r| r["Type"] == "AWS::CloudWatch::Alarm" && r["Properties"]["Namespace"] == "AWS/SQS")
        .expect("an alarm on the queue");
    assert_eq!(alarm["Properties"]["MetricName"], "ApproximateNumberOfMessagesVisible");
    assert_eq!(
        alarm["Properties"]["Dimensions"][0]["Value"],
        json!({ "Fn::GetAtt": ["DeadLetterQueue", "QueueName"] })
    );
    let errors = resources
        .values()
        .find(|r| r["Properties"]["Namespace"] == "AWS/Lambda" && r["Properties"]["MetricName"] == "Errors")
        .expect("an alarm on compactor errors");
    assert_eq!(errors["Properties"]["Dimensions"][0]["Value"], json!({ "Ref": "CompactorFunction" }));
    let stale = resources
        .values()
        .find(|r| r["Properties"]["MetricName"] == "NewestCommitAgeSeconds")
        .expect("an alarm on the compactor's staleness metric");
    assert_eq!(stale["Properties"]["Namespace"], "Distributary");
    assert_eq!(stale["Properties"]["Dimensions"][0]["Name"], "Store");
    assert_eq!(function["Environment"]["Variables"]["DISTRIBUTARY_METRICS_NAMESPACE"], "Distributary");
}

#[test]
fn iam_statements_are_least_privilege() {
    let template = template();
    let all = statements(&template);
    assert!(all.len() >= 15, "policies were found: {}", all.len());
    for (owner, statement) in &all {
        if statement["Effect"] != "Allow" {
            continue;
        }
        let actions = actions(statement);
        assert!(!actions.is_empty(), "{owner}: {statement}");
        if !actions.iter().any(|a| is_write(a)) {
            continue;
        }
        for resource in resource_strings(&statement["Resource"]) {
            // Every resource of a write is one of this stack's (a ${...}
            // reference), never "*" nor a whole service's ARN space.
            assert!(resource != "*" && resource.contains("${"), "{owner}: {actions:?} on {resource}");
        }
    }

    let of = |owner: &str| -> Vec<&Value> { all.iter().filter(|(o, _)| o == owner).map(|(_, s)| s).collect() };
    let granted = |owner: &str| -> BTreeMap<String, BTreeSet<String>> {
        let mut map: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for statement in of(owner) {
            for action in actions(statement) {
                map.entry(action).or_default().extend(resource_strings(&statement["Resource"]));
            }
        }
        map
    };
    let set = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();

    // The primary: creates its L0 segments and a lineage's first snapshot,
    // swaps the manifest and snapshot index, reads; never deletes.
    let primary = granted("PrimaryPolicy");
    assert_eq!(
        primary.keys().cloned().collect::<BTreeSet<_>>(),
        set(&["kms:Decrypt", "kms:GenerateDataKey", "s3:GetObject", "s3:ListBucket", "s3:PutObject"])
    );
    assert_eq!(
        primary["s3:PutObject"],
        set(&[
            "${Bucket.Arn}/${StorePrefix}/*/l0/*.seg",
            "${Bucket.Arn}/${StorePrefix}/*/snapshots/0000000000000001.seg",
            "${Bucket.Arn}/${StorePrefix}/*/snapshots/index.json",
            "${Bucket.Arn}/${StorePrefix}/manifest.json",
        ])
    );
    assert_eq!(primary["s3:GetObject"], set(&["${Bucket.Arn}/${StorePrefix}/*"]));
    // Readers: read only.
    let reader = granted("ReaderPolicy");
    assert_eq!(reader.keys().cloned().collect::<BTreeSet<_>>(), set(&["kms:Decrypt", "s3:GetObject", "s3:ListBucket"]));
    assert_eq!(reader["s3:GetObject"], set(&["${Bucket.Arn}/${StorePrefix}/*"]));
    // The compactor: read, write and delete within the prefix.
    let compactor = granted("CompactorRole");
    for action in ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"] {
        assert_eq!(compactor[action], set(&["${Bucket.Arn}/${StorePrefix}/*"]), "{action}");
    }
    assert!(!compactor.keys().any(|a| a.starts_with("iam:") || a.contains('*')), "{compactor:?}");
    // Listing (for 404s on missing keys) is of the stack's bucket only.
    for policy in [&primary, &reader, &compactor] {
        assert_eq!(policy["s3:ListBucket"], set(&["${Bucket.Arn}"]));
    }

    // The bucket policy: TLS only, segments create-only, documents by CAS.
    let bucket = of("BucketPolicy");
    let denies = |sid: &str| bucket.iter().find(|s| s["Sid"] == sid).copied().unwrap_or_else(|| panic!("{sid}"));
    assert_eq!(denies("DenyInsecureTransport")["Condition"]["Bool"]["aws:SecureTransport"], "false");
    let create_only = denies("SegmentsAreCreateOnly");
    assert_eq!(create_only["Effect"], "Deny");
    assert_eq!(create_only["Condition"]["Null"]["s3:if-none-match"], "true");
    let cas = denies("DocumentsChangeByCompareAndSwap");
    assert_eq!(cas["Condition"]["Null"], json!({ "s3:if-none-match": "true", "s3:if-match": "true" }));
    // Every key the primary may put is covered by one of the two.
    let guarded: Vec<String> = [create_only, cas].iter().flat_map(|s| resource_strings(&s["Resource"])).collect();
    for key in &primary["s3:PutObject"] {
        // An object the pattern allows, e.g. app/<generation>/l0/0000000000000002.seg.
        let object = key
            .replace("${Bucket.Arn}/${StorePrefix}/", "app/")
            .replace("*/", &format!("{GENERATION}/"))
            .replace("*.seg", "0000000000000002.seg");
        assert!(
            guarded.iter().any(|g| wildcard_matches(&g.replace("${Bucket.Arn}/${StorePrefix}", "app"), &object)),
            "{object} ({key}) has no conditional-write guard in {guarded:?}"
        );
    }
}

#[test]
fn lambda_is_arm64_al2023_sized_from_the_benchmark_with_reserved_concurrency() {
    let template = template();
    let function = &resources(&template)["CompactorFunction"];
    assert_eq!(function["Type"], "AWS::Serverless::Function");
    assert_eq!(function["Metadata"]["BuildMethod"], "rust-cargolambda");
    let properties = &function["Properties"];
    assert_eq!(properties["Runtime"], "provided.al2023");
    assert_eq!(properties["Architectures"], json!(["arm64"]));
    assert_eq!(properties["Handler"], "bootstrap");
    assert!(repo().join("infra").join(properties["CodeUri"].as_str().unwrap()).join("Cargo.toml").exists());
    assert_eq!(properties["ReservedConcurrentExecutions"], json!({ "Ref": "CompactorReservedConcurrency" }));
    let parameters = &template["Parameters"];
    // The benchmark's peak RSS is 34 MB and its 1 GB compaction 6.6 s: the
    // defaults leave room for CPU share and S3 round trips.
    assert!(parameters["CompactorMemoryMiB"]["Default"].as_u64().unwrap() >= 512);
    assert!(parameters["CompactorTimeoutSeconds"]["Default"].as_u64().unwrap() >= 60);
    assert!(parameters["CompactorEphemeralStorageMiB"]["Default"].as_u64().unwrap() >= 1024);
    // Every compaction setting the function reads is a parameter.
    let variables = properties["Environment"]["Variables"].as_object().unwrap();
    for (variable, parameter) in [
        ("DISTRIBUTARY_L1_WINDOW", "L1Window"),
        ("DISTRIBUTARY_SNAPSHOT_INTERVAL", "SnapshotInterval"),
        ("DISTRIBUTARY_SNAPSHOT_RETENTION", "SnapshotRetention"),
        ("DISTRIBUTARY_L0_RETENTION", "L0Retention"),
        ("DISTRIBUTARY_MAX_FAN_IN", "MaxFanIn"),
    ] {
        assert_eq!(variables[variable], json!({ "Ref": parameter }), "{variable}");
        // The parameter's default is the compactor's own default.
        let default = parameters[parameter]["Default"].to_string().trim_matches('"').to_string();
        let config = distributary_lambda::config_from_env(|name| (name == variable).then(|| default.clone()))
            .unwrap_or_else(|e| panic!("{parameter} default {default}: {e}"));
        assert_eq!(
            format!("{config:?}").replace(|c: char| c.is_whitespace(), ""),
            format!("{:?}", CompactConfig::default()).replace(|c: char| c.is_whitespace(), ""),
            "{parameter} default {default} differs from the compactor's"
        );
    }
    let outputs = template["Outputs"].as_object().unwrap();
    for output in ["BucketName", "StoreUrl", "PrimaryPolicyArn", "ReaderPolicyArn", "CdnUrl"] {
        assert!(outputs.contains_key(output), "output {output}");
    }
}

// ------------------------------------------------------------------- linters

/// A tool from PATH, or where scripts/setup.sh installs it.
fn tool(name: &str, fallback: &str) -> PathBuf {
    let from_env = std::env::var_os(name.to_uppercase().replace('-', "_")).map(PathBuf::from);
    let on_path = std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file()));
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    from_env.or(on_path).unwrap_or_else(|| home.join(fallback))
}

/// Variants of the template that turn every optional resource on, so the
/// linters see the CDN, the subscription and versioning too.
fn template_variants(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let text = std::fs::read_to_string(template_path())?;
    let mut all_on = String::new();
    let mut parameter = String::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("  ").and_then(|l| l.strip_suffix(':'))
            && !name.starts_with(' ')
        {
            parameter = name.to_string();
        }
        let line = match (parameter.as_str(), line.trim()) {
            ("EnableCdn" | "EnableVersioning" | "ExpectContinuousWrites", "Default: \"false\"") => {
                line.replace("\"false\"", "\"true\"")
            }
            ("AlarmEmail", "Default: \"\"") => line.replace("\"\"", "\"ops@example.com\""),
            _ => line.to_string(),
        };
        all_on.push_str(&line);
        all_on.push('\n');
    }
    ensure!(all_on.matches("Default: \"true\"").count() >= 3, "the variant turned the options on");
    // And without the checkov skips, to prove each one is needed.
    let mut no_skips = String::new();
    let mut skipping: Option<usize> = None;
    for line in all_on.lines() {
        let indent = line.len() - line.trim_start().len();
        if let Some(level) = skipping {
            if line.trim().is_empty() || indent > level {
                continue;
            }
            skipping = None;
        }
        if line.trim() == "checkov:" {
            skipping = Some(indent);
            continue;
        }
        no_skips.push_str(line);
        no_skips.push('\n');
    }
    let (all_on_path, no_skips_path) = (dir.join("all-options.yaml"), dir.join("no-skips.yaml"));
    std::fs::write(&all_on_path, all_on)?;
    std::fs::write(&no_skips_path, no_skips)?;
    Ok((all_on_path, no_skips_path))
}

#[test]
fn template_passes_cfn_lint() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (all_on, _) = template_variants(dir.path())?;
    let cfn_lint = tool("cfn-lint", ".local/bin/cfn-lint");
    for file in [template_path(), all_on] {
        let output = Command::new(&cfn_lint)
            .arg(&file)
            .output()
            .with_context(|| format!("run {} (scripts/setup.sh installs it)", cfn_lint.display()))?;
        ensure!(
            output.status.success(),
            "cfn-lint {}:\n{}{}",
            file.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// The `checkov: skip:` ids annotated in the template, each with a comment.
fn annotated_skips(template: &Value) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for (name, resource) in resources(template) {
        for skip in list(&resource["Metadata"]["checkov"]["skip"]) {
            let comment = skip["comment"].as_str().unwrap_or_default();
            assert!(comment.split_whitespace().count() >= 5, "{name}: skip {} needs a reason", skip["id"]);
            ids.insert(format!("{}:{name}", skip["id"].as_str().unwrap()));
        }
    }
    ids
}

#[test]
fn template_passes_checkov_and_every_skip_is_needed() -> Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::copy(template_path(), dir.path().join("template.yaml"))?;
    template_variants(dir.path())?;
    let checkov = tool("checkov", ".local/share/distributary/checkov-venv/bin/checkov");
    // One run over the three files: checkov takes half a minute to start.
    let output = Command::new(&checkov)
        .args(["--framework", "cloudformation", "--skip-download", "--output", "json", "--directory"])
        .arg(dir.path())
        .output()
        .with_context(|| format!("run {} (scripts/setup.sh installs it)", checkov.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: Value = serde_json::from_str(&stdout)
        .with_context(|| format!("checkov JSON: {stdout}{}", String::from_utf8_lossy(&output.stderr)))?;
    let mut failed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut passed: BTreeMap<String, usize> = BTreeMap::new();
    for report in list(&report) {
        for check in list(&report["results"]["failed_checks"]) {
            let file = check["file_path"].as_str().unwrap_or_default().rsplit('/').next().unwrap().to_string();
            let resource = check["resource"].as_str().unwrap_or_default().rsplit('.').next().unwrap().to_string();
            failed.entry(file).or_default().insert(format!("{}:{resource}", check["check_id"].as_str().unwrap()));
        }
        for check in list(&report["results"]["passed_checks"]) {
            let file = check["file_path"].as_str().unwrap_or_default().rsplit('/').next().unwrap().to_string();
            *passed.entry(file).or_default() += 1;
        }
    }
    for file in ["template.yaml", "all-options.yaml", "no-skips.yaml"] {
        assert!(passed.get(file).is_some_and(|&n| n >= 30), "checkov checked {file}: {passed:?}");
    }
    assert_eq!(failed.get("template.yaml"), None, "checkov failures in the template");
    assert_eq!(failed.get("all-options.yaml"), None, "checkov failures with every option on");
    let skips = annotated_skips(&template());
    assert_eq!(
        failed.get("no-skips.yaml").cloned().unwrap_or_default(),
        skips,
        "every annotated skip, and only those, is needed"
    );
    Ok(())
}

// ------------------------------------------------- the event the rule delivers

/// 2026-01-01T00:00:00Z.
const T0: u64 = 1_767_225_600_000;

/// The EventBridge event S3 sends for a PutObject of `key` (the layout of
/// the example in the S3 user guide).
fn eventbridge_event(bucket: &str, key: &str) -> Value {
    json!({
        "version": "0",
        "id": "17793124-05d4-b198-2fde-7ededc63b103",
        "detail-type": "Object Created",
        "source": "aws.s3",
        "account": "111122223333",
        "time": "2026-01-01T00:10:00Z",
        "region": "us-east-1",
        "resources": [format!("arn:aws:s3:::{bucket}")],
        "detail": {
            "version": "0",
            "bucket": { "name": bucket },
            "object": { "key": key, "size": 1024, "etag": "b1946ac92492d2347c6235b4d2611184", "sequencer": "617f08299329d189" },
            "request-id": "N4N7GDK58NMKJ12R",
            "requester": "123456789012",
            "source-ip-address": "1.2.3.4",
            "reason": "PutObject"
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_the_rule_delivers_compacts_the_store_and_reports_staleness() -> Result<()> {
    let template = template();
    let rule = resources(&template).values().find(|r| r["Type"] == "AWS::Events::Rule").unwrap();
    let pattern = rule["Properties"]["EventPattern"]["detail"]["object"]["key"][0]["wildcard"]["Fn::Sub"]
        .as_str()
        .unwrap()
        .replace("${StorePrefix}", "apps/db");

    let moto = MotoServer::start();
    let base = moto.base_store().await;
    let bucket = moto.create_bucket();
    let store = base.with_location(bucket.clone(), "apps/db".into());
    let mut generation = [7u8; 16];
    generation[..6].copy_from_slice(&T0.to_be_bytes()[2..]);
    let mut db = SyntheticDb::new(GenerationId(generation), 512, 24, None, 11);
    db.create_generation(&store, T0).await?;
    let mut keys = Vec::new();
    for i in 0..6u64 {
        let object = db.next_l0(1, 4, T0 + (i + 1) * 30_000)?;
        put(&store, &object).await?;
        keys.push(format!("apps/db/{}", object.0));
    }
    let newest_commit = T0 + 6 * 30_000;
    let clock = Arc::new(ManualClock::new(newest_commit + 2_500));
    let config = CompactConfig { l1_window: std::time::Duration::from_secs(60), ..CompactConfig::default() };
    let compactor = Compactor::new(base, config, clock).with_metrics(Some("Distributary".into()));

    let last = keys.last().unwrap();
    assert!(wildcard_matches(&pattern, last), "the rule selects {last}");
    // Through serde, as the runtime does with the invocation's body.
    let event: Event = serde_json::from_value(eventbridge_event(&bucket, last))?;
    let response = handle(&compactor, LambdaEvent::new(event, Context::default())).await?;
    ensure!(response.compacted.len() == 1, "{:?}", response.compacted);
    let compacted = &response.compacted[0];
    assert_eq!(compacted.target.prefix, "apps/db");
    assert_eq!(compacted.newest.as_deref(), Some(TxId(7).to_string().as_str()));
    assert!(compacted.l1_created >= 2, "closed windows were merged: {compacted:?}");
    assert_eq!(compacted.newest_commit_age_ms, Some(2_500), "age of the newest commit at the end of the run");
    let uncompacted = compacted.uncompacted_transactions.context("uncompacted")?;
    let manifest = read_manifest(&store).await?.context("manifest")?.value;
    assert_eq!(uncompacted, manifest.newest.txid.0 + 1 - manifest.l0_min_txid.0, "TXIDs after the L1 chain");
    assert!((1..6).contains(&uncompacted), "only the open windows' transactions: {uncompacted}");
    let line = distributary_lambda::metrics_line("Distributary", compacted, T0);
    let metrics: Value = serde_json::from_str(&line)?;
    // The alarm's dimension value is the template's "s3://${Bucket}/${StorePrefix}".
    assert_eq!(metrics["Store"], format!("s3://{bucket}/apps/db"));
    assert_eq!(metrics["NewestCommitAgeSeconds"], 2.5);

    // An event the rule would not deliver (the compactor's own write) is a no-op.
    let l1 = format!("apps/db/{}/l1/0000000000000002.seg", db.generation);
    assert!(!wildcard_matches(&pattern, &l1));
    let event: Event = serde_json::from_value(eventbridge_event(&bucket, &l1))?;
    let response = handle(&compactor, LambdaEvent::new(event, Context::default())).await?;
    assert!(response.compacted.is_empty());
    Ok(())
}

// -------------------------------------------------- units, cron line, docs

/// Where the units and docs install the binaries.
const INSTALLED: [(&str, &str, &str); 2] = [
    ("/usr/local/bin/distributary", "distributary", "distributary"),
    ("/usr/local/bin/edge-reader", "edge-reader", "edge-reader"),
];

fn real_binary(installed: &str) -> PathBuf {
    let (_, package, name) = INSTALLED.iter().find(|(path, _, _)| *path == installed).expect("a known binary");
    binary(package, name)
}

/// Every `--flag` of `command` (after the binary and its subcommand) is one
/// the subcommand's `--help` lists. `Ok(false)` if the subcommand does not
/// exist in this build.
fn flags_exist(command: &str) -> Result<bool> {
    let words: Vec<&str> = command.split_whitespace().collect();
    let (program, subcommand) = (real_binary(words[0]), words[1]);
    let help = Command::new(&program).args([subcommand, "--help"]).output()?;
    if !help.status.success() {
        return Ok(false);
    }
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in words.iter().filter(|w| w.starts_with("--")) {
        let flag = flag.split('=').next().unwrap();
        ensure!(
            help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
            "{command}: {flag} is not in `{} {subcommand} --help`",
            words[0]
        );
    }
    Ok(true)
}

fn units() -> Vec<PathBuf> {
    let mut units: Vec<PathBuf> = std::fs::read_dir(repo().join("infra/systemd"))
        .expect("infra/systemd")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "service" || e == "timer"))
        .collect();
    units.sort();
    units
}

fn exec_start(unit: &Path) -> Option<String> {
    std::fs::read_to_string(unit).ok()?.lines().find_map(|l| l.strip_prefix("ExecStart=").map(str::to_string))
}

#[test]
fn systemd_units_verify_with_the_real_binaries() -> Result<()> {
    let units = units();
    let names: Vec<String> = units.iter().map(|u| u.file_name().unwrap().to_string_lossy().into_owned()).collect();
    for expected in [
        "distributary-replicate.service",
        "edge-reader-sync@.service",
        "edge-reader-sync@.timer",
        "edge-reader-serve@.service",
    ] {
        ensure!(names.iter().any(|n| n == expected), "infra/systemd/{expected} is missing: {names:?}");
    }
    let dir = tempfile::tempdir()?;
    let mut to_verify = Vec::new();
    for unit in &units {
        let mut text = std::fs::read_to_string(unit)?;
        // verify checks that ExecStart's program exists: point it at the build.
        for (installed, _, _) in INSTALLED {
            if text.contains(installed) {
                text = text.replace(installed, &real_binary(installed).display().to_string());
            }
        }
        let name = unit.file_name().unwrap().to_string_lossy().into_owned();
        std::fs::write(dir.path().join(&name), text)?;
        // Templates are verified through an instance.
        to_verify.push(dir.path().join(name.replace("@.", "@app.")));
    }
    let output = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&to_verify)
        .output()
        .context("run systemd-analyze")?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(output.status.success(), "systemd-analyze verify failed:\n{stderr}");
    // Unknown keys and bad values are only warnings: none is acceptable.
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| names.iter().any(|n| l.contains(n.trim_end_matches(".service").trim_end_matches(".timer"))))
        .collect();
    ensure!(ours.is_empty(), "systemd-analyze verify warned:\n{}", ours.join("\n"));

    for unit in &units {
        let Some(command) = exec_start(unit) else { continue };
        if !flags_exist(&command)? {
            // `edge-reader serve` lands in another change; its flags are
            // checked as soon as the binary has the subcommand.
            eprintln!("{}: subcommand not in this build yet, flags not checked", unit.display());
            ensure!(command.contains("edge-reader serve"), "{}: {command}: no such subcommand", unit.display());
        }
    }
    Ok(())
}

/// A WAL-mode database with a table `t` of `rows` rows.
fn app_db(path: &Path, rows: u32) -> Result<()> {
    let db = rusqlite::Connection::open(path)?;
    db.pragma_update(None, "journal_mode", "wal")?;
    db.execute_batch("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT)")?;
    for i in 0..rows {
        db.execute("INSERT INTO t (v) VALUES (?1)", [format!("row {i}")])?;
    }
    Ok(())
}

/// The fenced block of docs/DEPLOY.md whose info string is `info` exactly.
fn doc_block(info: &str) -> Result<String> {
    let doc = std::fs::read_to_string(repo().join("docs/DEPLOY.md"))?;
    let fence = format!("```{info}\n");
    let start = doc.find(&fence).with_context(|| format!("docs/DEPLOY.md has no ```{info} block"))? + fence.len();
    let end = doc[start..].find("```").context("unterminated block")?;
    Ok(doc[start..start + end].to_string())
}

fn run(shell: &str) -> Result<String> {
    let output = Command::new("sh").args(["-c", shell]).output()?;
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    if !output.status.success() {
        bail!("`{shell}` failed: {text}");
    }
    Ok(text)
}

/// The documented primary config and the edge reader's env file, the sync
/// unit's command and the crontab line, run for real against a local store:
/// the replica answers the query the guide shows.
#[test]
fn documented_config_units_and_cron_line_replicate_and_sync() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    let store_url = format!("file://{}", root.join("store").display());
    let app_dir = root.join("var/lib/app");
    std::fs::create_dir_all(&app_dir)?;
    app_db(&app_dir.join("app.db"), 50)?;

    // The primary: the guide's /etc/distributary/replicate.yml.
    let config = doc_block("yaml /etc/distributary/replicate.yml")?;
    ensure!(config.contains("/var/lib/app/app.db") && config.contains("s3://"), "{config}");
    let url_line = config.lines().find(|l| l.trim_start().starts_with("- url:")).context("a url")?;
    let indent = &url_line[..url_line.len() - url_line.trim_start().len()];
    let config = config
        .replace(url_line, &format!("{indent}- url: {store_url}"))
        .replace("/var/lib/app/", &format!("{}/", app_dir.display()))
        .lines()
        .filter(|l| !l.contains("encryption-key-file"))
        .collect::<Vec<_>>()
        .join("\n");
    let config_path = root.join("replicate.yml");
    std::fs::write(&config_path, config)?;
    let unit = exec_start(&repo().join("infra/systemd/distributary-replicate.service")).context("ExecStart")?;
    ensure!(flags_exist(&unit)?);
    let command = unit
        .replace("/usr/local/bin/distributary", &real_binary("/usr/local/bin/distributary").display().to_string())
        .replace("/etc/distributary/replicate.yml", &config_path.display().to_string());
    // --once: the unit's command, shipping what is committed and exiting.
    run(&format!("{command} --once"))?;

    // An edge reader from the guide's env file and the sync unit's command.
    let env = doc_block("ini /etc/edge-reader/app.env")?;
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    for line in env.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')) {
        let (name, value) = line.split_once('=').context("NAME=value")?;
        vars.insert(name.to_string(), value.to_string());
    }
    ensure!(vars.contains_key("EDGE_READER_SOURCE") && vars.contains_key("EDGE_READER_LISTEN"), "{vars:?}");
    vars.insert("EDGE_READER_SOURCE".into(), store_url.clone());
    let state = root.join("var/lib/edge-reader");
    std::fs::create_dir_all(&state)?;
    let unit = exec_start(&repo().join("infra/systemd/edge-reader-sync@.service")).context("ExecStart")?;
    ensure!(flags_exist(&unit)?);
    let mut command = unit
        .replace("%i", "app")
        .replace("/var/lib/edge-reader", &state.display().to_string())
        .replace("/usr/local/bin/edge-reader", &real_binary("/usr/local/bin/edge-reader").display().to_string());
    for (name, value) in &vars {
        command = command.replace(&format!("${{{name}}}"), value);
    }
    ensure!(!command.contains("${"), "every variable of {command} is in the env file");
    run(&command)?;
    let edge = real_binary("/usr/local/bin/edge-reader");
    let replica = state.join("app.db");
    let count = run(&format!("{} query --db {} 'SELECT count(*) FROM t'", edge.display(), replica.display()))?;
    ensure!(count.contains("50"), "the replica has the primary's rows: {count}");

    // More writes; the crontab line's command catches the replica up.
    app_db(&app_dir.join("app.db"), 25)?;
    run(&format!(
        "{} replicate --config {} --once",
        real_binary("/usr/local/bin/distributary").display(),
        config_path.display()
    ))?;
    let cron = std::fs::read_to_string(repo().join("infra/systemd/edge-reader.cron"))?;
    let line = cron.lines().find(|l| !l.trim().is_empty() && !l.starts_with('#')).context("a crontab line")?;
    let fields: Vec<&str> = line.splitn(7, ' ').collect();
    ensure!(fields.len() == 7, "five time fields, a user, a command: {line}");
    let ranges = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)];
    for (field, (low, high)) in fields[..5].iter().zip(ranges) {
        ensure!(cron_field_ok(field, low, high), "crontab field {field:?} of {line}");
    }
    let documented = doc_block("cron")?;
    ensure!(documented.trim() == line.trim(), "docs/DEPLOY.md shows the shipped crontab line:\n{documented}\n{line}");
    let command = fields[6];
    let (program, redirect) = command.split_once(" >>").context("the line logs to a file")?;
    ensure!(flags_exist(program)?);
    let source = program.split_whitespace().skip_while(|w| *w != "--source").nth(1).context("--source")?;
    let log = root.join("cron.log");
    let program = program
        .replace(source, &store_url)
        .replace("/var/lib/edge-reader", &state.display().to_string())
        .replace("/usr/local/bin/edge-reader", &edge.display().to_string());
    ensure!(redirect.trim().ends_with("2>&1"), "{redirect}");
    run(&format!("{program} >>{} 2>&1", log.display()))?;
    let count = run(&format!("{} query --db {} 'SELECT count(*) FROM t'", edge.display(), replica.display()))?;
    ensure!(count.contains("75"), "the cron line caught the replica up: {count}");
    Ok(())
}

/// One crontab time field: `*`, `*/n`, numbers, ranges and lists in range.
fn cron_field_ok(field: &str, low: u32, high: u32) -> bool {
    field.split(',').all(|part| {
        let (range, step) = part.split_once('/').map_or((part, None), |(r, s)| (r, Some(s)));
        if step.is_some_and(|s| s.parse::<u32>().map_or(true, |n| n == 0)) {
            return false;
        }
        if range == "*" {
            return true;
        }
        let bounds: Vec<Option<u32>> = range.split('-').map(|n| n.parse().ok()).collect();
        match bounds.as_slice() {
            [Some(n)] => (low..=high).contains(n),
            [Some(a), Some(b)] => a <= b && (low..=high).contains(a) && (low..=high).contains(b),
            _ => false,
        }
    })
}
