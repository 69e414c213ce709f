//! The HpcCache CRD (crds/) on a real kube-apiserver: what the schema and its CEL rules accept and refuse.

use std::io::Write;
use std::process::Stdio;

use hpcc_test_support::TestCluster;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

const CRDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/crds");
const SUB: &str = "11111111-2222-3333-4444-555555555555";

async fn setup(prefix: &str) -> (Api<DynamicObject>, String) {
    let cluster = TestCluster::shared();
    let names = cluster.install_crds(CRDS).await;
    assert!(names.iter().any(|n| n == "hpccaches.hpccache.io"), "crds/ lacks hpccaches.hpccache.io: {names:?}");
    let ns = cluster.namespace(prefix).await;
    (hpccaches(cluster.client().await, &ns), ns)
}

fn hpccaches(client: Client, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("hpccache.io", "v1alpha1", "HpcCache");
    Api::namespaced_with(client, ns, &ApiResource::from_gvk_with_plural(&gvk, "hpccaches"))
}

fn arm(rest: &str) -> String {
    format!("/subscriptions/{SUB}/resourceGroups/hpc-rg/providers/{rest}")
}

/// A valid, fully specified HpcCache as a user would write it (design.md §2).
fn valid(name: &str) -> Value {
    json!({
        "apiVersion": "hpccache.io/v1alpha1",
        "kind": "HpcCache",
        "metadata": {"name": name},
        "spec": {
            "azure": {"subscriptionId": SUB, "resourceGroup": "hpc-rg", "location": "eastus", "name": "genomics-cache"},
            "sku": "Standard_2G",
            "cacheSizeGB": 3072,
            "subnetId": arm("Microsoft.Network/virtualNetworks/vnet/subnets/cache"),
            "identity": {"type": "SystemAssigned"},
            "encryption": {
                "keyVaultId": arm("Microsoft.KeyVault/vaults/kv-cmk"),
                "keyName": "cache-key",
                "keyVersion": "0123456789abcdef0123456789abcdef",
                "rotateToLatestKeyVersion": false
            },
            "keyAccess": "Automatic",
            "onAuthorizationTimeout": "Recreate",
            "deletionPolicy": "Delete",
            "tags": {"team": "genomics"}
        }
    })
}

fn object(value: Value) -> DynamicObject {
    serde_json::from_value(value).unwrap()
}

/// Every field of `sent` is in `got` with the same value (the server may add defaults).
fn assert_contains(got: &Value, sent: &Value, path: &str) {
    match sent {
        Value::Object(fields) => {
            for (k, v) in fields {
                assert_contains(&got[k], v, &format!("{path}.{k}"));
            }
        }
        _ => assert_eq!(got, sent, "{path} did not round-trip"),
    }
}

/// The apiserver's refusal: status code and message.
fn refusal(result: Result<DynamicObject, kube::Error>) -> (u16, String) {
    match result {
        Err(kube::Error::Api(status)) => (status.code, status.message),
        Err(e) => panic!("expected the apiserver to refuse, got {e}"),
        Ok(obj) => panic!("the apiserver accepted an invalid HpcCache: {:?}", obj.data),
    }
}

#[tokio::test]
async fn a_valid_hpccache_round_trips() {
    let (api, _ns) = setup("roundtrip").await;
    let sent = valid("genomics");
    api.create(&PostParams::default(), &object(sent.clone())).await.unwrap();
    let got = api.get("genomics").await.unwrap();
    assert_contains(&got.data["spec"], &sent["spec"], "spec");
    assert_eq!(got.metadata.generation, Some(1));
}

#[tokio::test]
async fn a_user_assigned_identity_round_trips() {
    let (api, _ns) = setup("ua").await;
    let mut sent = valid("ua");
    sent["spec"]["identity"] = json!({
        "type": "UserAssigned",
        "userAssignedIdentityId": arm("Microsoft.ManagedIdentity/userAssignedIdentities/cache-id")
    });
    api.create(&PostParams::default(), &object(sent.clone())).await.unwrap();
    assert_contains(&api.get("ua").await.unwrap().data["spec"], &sent["spec"], "spec");
}

#[tokio::test]
async fn a_subscription_id_that_is_not_a_guid_is_refused() {
    let (api, _ns) = setup("badsub").await;
    let mut bad = valid("badsub");
    bad["spec"]["azure"]["subscriptionId"] = json!("my-subscription");
    let (code, message) = refusal(api.create(&PostParams::default(), &object(bad)).await);
    assert_eq!(code, 422, "{message}");
    assert!(message.contains("subscriptionId"), "the refusal does not name the field: {message}");
}

#[tokio::test]
async fn kubectl_apply_refuses_a_bad_manifest_with_a_readable_message() {
    let cluster = TestCluster::shared();
    let (_api, ns) = setup("kubectl").await;
    let mut bad = valid("kubectl");
    bad["spec"]["azure"]["subscriptionId"] = json!("not-a-guid");
    let mut child = cluster
        .kubectl()
        .args(["apply", "--server-side", "-n", &ns, "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(bad.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "kubectl apply accepted it: {}", String::from_utf8_lossy(&out.stdout));
    assert!(stderr.contains("subscriptionId") && stderr.contains("not-a-guid"), "{stderr}");
}

#[tokio::test]
async fn a_user_assigned_identity_without_an_id_is_refused() {
    let (api, _ns) = setup("uanoid").await;
    let mut bad = valid("uanoid");
    bad["spec"]["identity"] = json!({"type": "UserAssigned"});
    let (code, message) = refusal(api.create(&PostParams::default(), &object(bad)).await);
    assert_eq!(code, 422, "{message}");
    assert!(message.contains("userAssignedIdentityId"), "{message}");
}

#[tokio::test]
async fn changing_the_identity_is_refused() {
    let (api, _ns) = setup("identity").await;
    api.create(&PostParams::default(), &object(valid("immutable"))).await.unwrap();
    let change = json!({"spec": {"identity": {
        "type": "UserAssigned",
        "userAssignedIdentityId": arm("Microsoft.ManagedIdentity/userAssignedIdentities/other")
    }}});
    let (code, message) = refusal(api.patch("immutable", &PatchParams::default(), &Patch::Merge(&change)).await);
    assert_eq!(code, 422, "{message}");
    let lower = message.to_lowercase();
    assert!(lower.contains("immutable") && lower.contains("identity"), "{message}");
    // The stored object is unchanged.
    let stored = api.get("immutable").await.unwrap();
    assert_eq!(stored.data["spec"]["identity"]["type"], "SystemAssigned");
    assert_eq!(stored.metadata.generation, Some(1));
}

#[tokio::test]
async fn status_is_a_subresource() {
    let (api, _ns) = setup("status").await;
    api.create(&PostParams::default(), &object(valid("status"))).await.unwrap();
    // A write to the main resource ignores status...
    let with_status = json!({"status": {"phase": "Ready"}});
    let after = api.patch("status", &PatchParams::default(), &Patch::Merge(&with_status)).await.unwrap();
    assert!(after.data.get("status").is_none_or(|s| s.get("phase").is_none()), "{:?}", after.data);
    // ...and the status subresource takes it, without bumping the generation.
    let after = api.patch_status("status", &PatchParams::default(), &Patch::Merge(&with_status)).await.unwrap();
    assert_eq!(after.data["status"]["phase"], "Ready");
    assert_eq!(after.metadata.generation, Some(1));
}

/// Runs kubectl against the shared control plane; (success, stdout, stderr).
fn kubectl(args: &[&str]) -> (bool, String, String) {
    let out = TestCluster::shared().kubectl().args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[tokio::test]
async fn kubectl_get_shows_ready_and_reason_first() {
    let (api, ns) = setup("columns").await;
    api.create(&PostParams::default(), &object(valid("columns"))).await.unwrap();
    let ready = json!({"status": {"phase": "WaitingForKey", "conditions": [{
        "type": "Ready", "status": "False", "reason": "AwaitingManualGrant", "message": "grant it",
        "lastTransitionTime": "2026-01-01T00:00:00Z"
    }]}});
    api.patch_status("columns", &PatchParams::default(), &Patch::Merge(&ready)).await.unwrap();
    let (ok, out, err) = kubectl(&["get", "hpcc", "-n", &ns]);
    assert!(ok, "{err}");
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "REASON", "PHASE", "KEY", "DEADLINE", "AGE"], "{out}");
    let row: Vec<&str> = lines.next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(row[..4], ["columns", "False", "AwaitingManualGrant", "WaitingForKey"], "{out}");
    let (ok, wide, err) = kubectl(&["get", "hpcc", "-n", &ns, "-o", "wide"]);
    assert!(ok, "{err}");
    assert!(wide.lines().next().is_some_and(|h| h.contains("HEALTH") && h.contains("KEY URL")), "{wide}");
}

#[tokio::test]
async fn kubectl_explain_starts_with_a_real_description() {
    let _ = setup("explain").await;
    // The apiserver publishes a new CRD's OpenAPI a moment after it is Established.
    let start = std::time::Instant::now();
    let out = loop {
        let (ok, out, err) = kubectl(&["explain", "hpccache"]);
        if ok && out.contains("DESCRIPTION:") {
            break out;
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(60), "kubectl explain hpccache: {err}{out}");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    let description = out.split("DESCRIPTION:").nth(1).unwrap_or_default().trim_start();
    assert!(
        description.starts_with("An Azure HPC Cache encrypted with a customer-managed key"),
        "kubectl explain hpccache:\n{out}"
    );
    assert!(!out.contains("Auto-generated derived type"), "{out}");
    let (ok, spec, err) = kubectl(&["explain", "hpccache.spec.keyAccess"]);
    assert!(ok, "{err}");
    assert!(spec.contains("Who authorizes the cache's identity on the Key Vault"), "{spec}");
}

// ---- AmlFilesystem (Azure Managed Lustre) ----------------------------------------------------------------------

fn amlfilesystems(client: Client, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("hpccache.io", "v1alpha1", "AmlFilesystem");
    Api::namespaced_with(client, ns, &ApiResource::from_gvk_with_plural(&gvk, "amlfilesystems"))
}

fn valid_amlfs(name: &str) -> Value {
    json!({
        "apiVersion": "hpccache.io/v1alpha1",
        "kind": "AmlFilesystem",
        "metadata": {"name": name},
        "spec": {
            "azure": {"subscriptionId": SUB, "resourceGroup": "hpc-rg", "location": "eastus"},
            "sku": "AMLFS-Durable-Premium-250",
            "storageCapacityTiB": 8,
            "subnetId": arm("Microsoft.Network/virtualNetworks/vnet/subnets/lustre"),
            "zones": ["1"],
            "maintenanceWindow": {"dayOfWeek": "Sunday", "timeOfDayUTC": "02:00"},
            "identity": {"userAssignedIdentityId": arm("Microsoft.ManagedIdentity/userAssignedIdentities/lustre-id")},
            "encryption": {
                "keyVaultId": arm("Microsoft.KeyVault/vaults/kv-cmk"),
                "keyName": "lustre-key",
                "keyVersion": "0123456789abcdef0123456789abcdef"
            },
            "keyAccess": "Automatic"
        }
    })
}

#[tokio::test]
async fn amlfs_identity_sku_and_capacity_are_create_only_and_the_key_version_is_not() {
    let (_, ns) = setup("amlfs").await;
    let api = amlfilesystems(TestCluster::shared().client().await, &ns);
    let created = api.create(&PostParams::default(), &object(valid_amlfs("lustre"))).await.unwrap();
    assert_contains(&serde_json::to_value(&created).unwrap()["spec"], &valid_amlfs("lustre")["spec"], "spec");
    let changes = [
        (
            "identity",
            json!({"identity": {"userAssignedIdentityId": arm("Microsoft.ManagedIdentity/userAssignedIdentities/other-id")}}),
        ),
        ("sku", json!({"sku": "AMLFS-Durable-Premium-500"})),
        ("storageCapacityTiB", json!({"storageCapacityTiB": 16})),
    ];
    for (field, spec) in changes {
        let (code, msg) =
            refusal(api.patch("lustre", &PatchParams::default(), &Patch::Merge(&json!({"spec": spec}))).await);
        assert_eq!(code, 422, "{field}: {msg}");
        assert!(msg.contains(&format!("spec.{field} is immutable")), "{field}: {msg}");
    }
    let rotate = json!({"spec": {"encryption": {"keyVersion": "fedcba9876543210fedcba9876543210"}}});
    api.patch("lustre", &PatchParams::default(), &Patch::Merge(&rotate))
        .await
        .expect("a key version change is allowed");
    // CMK needs the user-assigned identity, and an unknown SKU is refused.
    let mut no_identity = valid_amlfs("no-identity");
    no_identity["spec"].as_object_mut().unwrap().remove("identity");
    let (code, msg) = refusal(api.create(&PostParams::default(), &object(no_identity)).await);
    assert!(code == 422 && msg.contains("userAssignedIdentityId is required"), "{code} {msg}");
    let mut bad_sku = valid_amlfs("bad-sku");
    bad_sku["spec"]["sku"] = json!("Standard_2G");
    assert_eq!(refusal(api.create(&PostParams::default(), &object(bad_sku)).await).0, 422);
}

// ---- hostile manifests: unicode, very long strings, many tags, close to the size limit ----
// (Found here: `#[schemars(length(max = 50))]` on the tag map emitted nothing, so any number of tags was stored;
// the schema now says maxProperties: 50.)

#[tokio::test]
async fn unicode_tags_are_accepted_and_round_trip() {
    let (api, _ns) = setup("unicode").await;
    let mut sent = valid("unicode");
    sent["spec"]["tags"] = json!({"团队": "基因组 🧬", "emoji🔑": "ü\u{200B}ñ", "rtl": "مرحبا", "zwj": "👩‍🔬"});
    api.create(&PostParams::default(), &object(sent.clone())).await.unwrap();
    assert_contains(&api.get("unicode").await.unwrap().data["spec"], &sent["spec"], "spec");
}

#[tokio::test]
async fn unicode_and_emoji_are_refused_where_azure_allows_only_ascii() {
    let (api, _ns) = setup("emoji").await;
    let cases: [(&str, &[&str], Value); 4] = [
        ("keyName", &["encryption", "keyName"], json!("cache-key-🔑")),
        ("name", &["azure", "name"], json!("génomics")),
        ("keyVersion", &["encryption", "keyVersion"], json!("０123456789abcdef0123456789abcdef")),
        ("sku", &["sku"], json!("Standard_2G\u{202E}")),
    ];
    for (field, path, value) in cases {
        let mut bad = valid("emoji");
        let mut at = &mut bad["spec"];
        for p in path {
            at = &mut at[*p];
        }
        *at = value.clone();
        let (code, message) = refusal(api.create(&PostParams::default(), &object(bad)).await);
        assert_eq!(code, 422, "{field}: {message}");
        assert!(message.contains(field), "{field}: the refusal does not name the field: {message}");
    }
}

#[tokio::test]
async fn more_than_50_tags_and_very_long_strings_are_refused_with_the_field_named() {
    let (api, _ns) = setup("long").await;
    let mut long_vault = valid("long");
    long_vault["spec"]["encryption"]["keyVaultId"] =
        json!(arm(&format!("Microsoft.KeyVault/vaults/{}", "k".repeat(10_000))));
    let mut long_key = valid("long");
    long_key["spec"]["encryption"]["keyName"] = json!("k".repeat(128));
    let mut long_sku = valid("long");
    long_sku["spec"]["sku"] = json!("S".repeat(65));
    let mut many_tags = valid("long");
    many_tags["spec"]["tags"] = Value::Object((0..51).map(|i| (format!("t{i}"), json!("v"))).collect());
    for (field, bad) in [("keyVaultId", long_vault), ("keyName", long_key), ("sku", long_sku), ("tags", many_tags)] {
        let (code, message) = refusal(api.create(&PostParams::default(), &object(bad)).await);
        assert_eq!(code, 422, "{field}: {message}");
        assert!(message.contains(field), "{field}: the refusal does not name the field: {message}");
        assert!(message.len() < 20_000, "{field}: the refusal echoes the whole value ({} bytes)", message.len());
    }
}

#[tokio::test]
async fn a_manifest_near_the_size_limit_is_stored_and_one_beyond_it_is_refused() {
    let (api, _ns) = setup("size").await;
    // 50 tags (the most allowed) of 20 KiB of multi-byte text each: about 1 MiB, under etcd's 1.5 MiB.
    let mut big = valid("big");
    big["spec"]["tags"] = Value::Object((0..50).map(|i| (format!("t{i}"), json!("é".repeat(10_240)))).collect());
    api.create(&PostParams::default(), &object(big.clone())).await.unwrap();
    assert_contains(&api.get("big").await.unwrap().data["spec"], &big["spec"], "spec");
    // About 4 MiB: beyond what the apiserver and etcd take, refused as a whole, not half-stored.
    let mut huge = valid("huge");
    huge["spec"]["tags"] = Value::Object((0..50).map(|i| (format!("t{i}"), json!("x".repeat(80 << 10)))).collect());
    let result = api.create(&PostParams::default(), &object(huge)).await;
    assert!(result.is_err(), "a 4 MiB HpcCache was stored");
    assert!(api.get_opt("huge").await.unwrap().is_none());
}
