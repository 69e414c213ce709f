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
