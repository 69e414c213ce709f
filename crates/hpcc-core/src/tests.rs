//! Table tests of the state machine: every phase, every observation that moves it, and the actions it picks.

use super::machine::*;
use super::*;
use crate::validate::strip_version;
use hpcc_api::v1alpha1::{AuthorizationTimeoutPolicy, AzureLocation, CacheIdentity, Encryption};
use hpcc_api::v1alpha1::{
    DeletionPolicy, GrantKind, GrantRecord, HpcCacheSpec, HpcCacheStatus, IdentityType, KeyAccess, Phase,
    ReconcilePolicy,
};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::time::Duration;

const SUB: &str = "11111111-2222-3333-4444-555555555555";
const VAULT: &str =
    "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv";
const KID: &str = "https://kv.vault.azure.net/keys/k/0123456789abcdef0123456789abcdef";
const KID2: &str = "https://kv.vault.azure.net/keys/k/fedcba9876543210fedcba9876543210";
const OWNER: &str = "cluster-a/research/genomics";
const LEGACY_OWNER: &str = "research/genomics";
const CACHE_ID: &str =
    "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg/providers/Microsoft.StorageCache/caches/c";

fn t0() -> Timestamp {
    "2026-11-29T10:00:00Z".parse().unwrap()
}

fn mins(m: i64) -> SignedDuration {
    SignedDuration::from_mins(m)
}

fn spec() -> HpcCacheSpec {
    HpcCacheSpec {
        azure: AzureLocation {
            subscription_id: SUB.into(),
            resource_group: "rg".into(),
            location: "eastus".into(),
            name: None,
        },
        sku: "Standard_2G".into(),
        cache_size_gb: 3072,
        subnet_id: format!(
            "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v/subnets/s"
        ),
        identity: CacheIdentity::default(),
        encryption: Some(Encryption {
            key_vault_id: VAULT.into(),
            key_name: "k".into(),
            key_version: Some("0123456789abcdef0123456789abcdef".into()),
            rotate_to_latest_key_version: false,
        }),
        key_access: KeyAccess::Automatic,
        on_authorization_timeout: AuthorizationTimeoutPolicy::Fail,
        max_recreations: 2,
        deletion_policy: DeletionPolicy::Delete,
        tags: Default::default(),
    }
}

fn user_assigned(mut s: HpcCacheSpec) -> HpcCacheSpec {
    s.identity = CacheIdentity {
        type_: IdentityType::UserAssigned,
        user_assigned_identity_id: Some(format!(
            "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id"
        )),
    };
    s
}

fn facts() -> Facts {
    Facts {
        now: t0(),
        cache: None,
        key: Some(KeyFacts::Valid { kid: KID.into() }),
        vault: Some(VaultFacts::Usable { protected: true, rbac: false }),
        identity: None,
    }
}

fn cache(prov: &str, health: &str) -> CacheFacts {
    CacheFacts {
        id: CACHE_ID.into(),
        provisioning_state: ProvisioningState::parse(prov),
        health_state: Some(HealthState::parse(health)),
        status_description: None,
        principal_id: Some("sa-principal".into()),
        tenant_id: Some("tenant".into()),
        created_at: Some(t0()),
        key_url: Some(KID.into()),
        key_vault_id: Some(VAULT.into()),
        rotation_enabled: false,
        tags: [(OWNER_TAG.to_string(), OWNER.to_string())].into(),
        mount_addresses: vec![],
    }
}

struct Case {
    spec: HpcCacheSpec,
    status: HpcCacheStatus,
    facts: Facts,
    deleting: bool,
    policy: Result<ReconcilePolicy, String>,
    adopt: bool,
}

impl Case {
    fn new() -> Self {
        Self {
            spec: spec(),
            status: HpcCacheStatus::default(),
            facts: facts(),
            deleting: false,
            policy: Ok(ReconcilePolicy::Manage),
            adopt: false,
        }
    }
    fn run(&self) -> Decision {
        decide(&Input {
            spec: &self.spec,
            generation: Some(1),
            status: &self.status,
            deleting: self.deleting,
            cache_id: CACHE_ID,
            owner: OWNER,
            legacy_owner: LEGACY_OWNER,
            policy: self.policy.clone(),
            adopt: self.adopt,
            facts: &self.facts,
            timing: Timing::default(),
        })
    }
}

fn cond<'a>(d: &'a Decision, t: &str) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    d.status.conditions.iter().find(|c| c.type_ == t).unwrap_or_else(|| panic!("no {t} condition"))
}

fn grant(principal: &str, system_assigned: bool) -> GrantRecord {
    GrantRecord {
        scope: VAULT.into(),
        principal_id: principal.into(),
        tenant_id: Some("tenant".into()),
        kind: GrantKind::AccessPolicy,
        system_assigned,
        made: false,
    }
}

#[test]
fn valid_system_assigned_spec_creates_and_records_intent() {
    let d = Case::new().run();
    assert_eq!(d.action, Action::Create { key_url: Some(KID.into()) });
    assert_eq!(d.status.phase, Some(Phase::Creating));
    assert_eq!(d.status.create_requested_at, Some(Time(t0())));
    assert_eq!(d.status.azure_resource_id.as_deref(), Some(CACHE_ID));
    assert_eq!(cond(&d, "Reconciling").status, "True");
    assert_eq!(cond(&d, "KeyValid").status, "True");
    assert_eq!(d.status.observed_generation, Some(1));
}

#[test]
fn microsoft_managed_keys_create_without_key_checks() {
    let mut c = Case::new();
    c.spec.encryption = None;
    c.facts.key = None;
    c.facts.vault = None;
    let d = c.run();
    assert_eq!(d.action, Action::Create { key_url: None });
    assert_eq!(cond(&d, "KeyValid").reason, "MicrosoftManagedKey");
}

#[test]
fn invalid_keys_and_vaults_stall_before_any_create() {
    let cases = [
        (Some(KeyFacts::Invalid { reason: Reason::KeyNotRSA, message: "EC".into() }), facts().vault, "KeyNotRSA"),
        (
            facts().key,
            Some(VaultFacts::Invalid { reason: Reason::VaultRegionMismatch, message: "westus".into() }),
            "VaultRegionMismatch",
        ),
    ];
    for (key, vault, reason) in cases {
        let mut c = Case::new();
        c.facts.key = key;
        c.facts.vault = vault;
        let d = c.run();
        assert_eq!(d.action, Action::None, "{reason}");
        assert_eq!(d.status.phase, Some(Phase::Pending));
        assert_eq!(cond(&d, "Stalled").status, "True");
        assert_eq!(cond(&d, "Stalled").reason, reason);
        assert_eq!(cond(&d, "KeyValid").status, "False");
        assert!(d.events.iter().any(|e| e.warning && e.reason == reason));
    }
}

#[test]
fn key_not_yet_checked_waits_in_pending() {
    let mut c = Case::new();
    c.facts.key = None;
    let d = c.run();
    assert_eq!(d.action, Action::None);
    assert_eq!(d.status.phase, Some(Phase::Pending));
    assert_eq!(cond(&d, "KeyValid").status, "Unknown");
}

#[test]
fn unprotected_vault_is_fixed_in_automatic_and_reported_in_manual() {
    let mut c = Case::new();
    c.facts.vault = Some(VaultFacts::Usable { protected: false, rbac: false });
    assert_eq!(c.run().action, Action::EnableVaultProtection);
    c.spec.key_access = KeyAccess::Manual;
    let d = c.run();
    assert_eq!(d.action, Action::None);
    assert_eq!(cond(&d, "Stalled").reason, "VaultPurgeProtectionDisabled");
}

#[test]
fn user_assigned_without_access_is_granted_before_create() {
    let mut c = Case::new();
    c.spec = user_assigned(spec());
    c.facts.identity = Some(IdentityFacts::Usable {
        principal_id: "ua".into(),
        tenant_id: Some("tenant".into()),
        has_key_access: Some(false),
    });
    let d = c.run();
    assert_eq!(d.status.phase, Some(Phase::Authorizing));
    assert_eq!(d.action, Action::Grant(grant("ua", false)));
    assert_eq!(d.status.grants, vec![grant("ua", false)], "intent recorded before acting");
    // Killed before the grant call: the intent alone does not count, the grant is sent again.
    c.status = d.status.clone();
    assert_eq!(c.run().action, Action::Grant(grant("ua", false)));
    // Azure accepted it: the cache is created.
    action_succeeded(&mut c.status, &d.action);
    assert!(c.status.grants[0].made);
    let d = c.run();
    assert_eq!(d.action, Action::Create { key_url: Some(KID.into()) });
    assert_eq!(cond(&d, "KeyAuthorized").status, "True");
}

#[test]
fn user_assigned_with_access_creates_directly_and_never_waits() {
    let mut c = Case::new();
    c.spec = user_assigned(spec());
    c.facts.identity =
        Some(IdentityFacts::Usable { principal_id: "ua".into(), tenant_id: None, has_key_access: Some(true) });
    let d = c.run();
    assert_eq!(d.action, Action::Create { key_url: Some(KID.into()) });
    c.status = d.status;
    c.facts.cache = Some(CacheFacts { principal_id: None, ..cache("Creating", "Transitioning") });
    let d = c.run();
    assert_eq!(d.status.phase, Some(Phase::Creating));
    assert_eq!(d.status.principal_id.as_deref(), Some("ua"));
}

#[test]
fn user_assigned_manual_without_access_creates_and_waits() {
    let mut c = Case::new();
    c.spec = user_assigned(spec());
    c.spec.key_access = KeyAccess::Manual;
    c.facts.identity =
        Some(IdentityFacts::Usable { principal_id: "ua".into(), tenant_id: None, has_key_access: Some(false) });
    assert!(matches!(c.run().action, Action::Create { .. }));
}

#[test]
fn missing_user_assigned_identity_stalls() {
    let mut c = Case::new();
    c.spec = user_assigned(spec());
    c.facts.identity =
        Some(IdentityFacts::Invalid { reason: Reason::IdentityNotFound, message: "no such identity".into() });
    let d = c.run();
    assert_eq!(d.action, Action::None);
    assert_eq!(cond(&d, "Stalled").reason, "IdentityNotFound");
}

#[test]
fn creating_cache_reports_azure_state_and_clears_intent() {
    let mut c = Case::new();
    c.status.create_requested_at = Some(Time(t0() - mins(1)));
    c.status.phase = Some(Phase::Creating);
    c.facts.cache = Some(cache("Creating", "Transitioning"));
    let d = c.run();
    assert_eq!(d.action, Action::None);
    assert_eq!(d.status.phase, Some(Phase::Creating));
    assert_eq!(d.status.create_requested_at, None);
    assert_eq!(d.status.created_at, Some(Time(t0())), "systemData.createdAt wins over the operator's record");
    assert_eq!(d.status.provisioning_state.as_deref(), Some("Creating"));
    assert_eq!(d.status.health_state.as_deref(), Some("Transitioning"));
    assert_eq!(d.status.authorization_deadline, Some(Time(t0() + mins(90))));
}

#[test]
fn created_at_falls_back_to_recorded_intent() {
    let mut c = Case::new();
    c.status.create_requested_at = Some(Time(t0() - mins(2)));
    c.facts.cache = Some(CacheFacts { created_at: None, ..cache("Creating", "WaitingForKey") });
    let d = c.run();
    assert_eq!(d.status.authorization_deadline, Some(Time(t0() - mins(2) + mins(90))));
}

#[test]
fn waiting_for_key_automatic_grants_system_principal() {
    let mut c = Case::new();
    c.facts.cache = Some(cache("Creating", "WaitingForKey"));
    let d = c.run();
    assert_eq!(d.status.phase, Some(Phase::WaitingForKey));
    assert_eq!(d.action, Action::Grant(grant("sa-principal", true)));
    assert_eq!(d.status.principal_id.as_deref(), Some("sa-principal"));
    // Once made, no second grant: wait for Azure.
    c.status = d.status;
    action_succeeded(&mut c.status, &Action::Grant(grant("sa-principal", true)));
    let d = c.run();
    assert_eq!(d.action, Action::None);
    assert_eq!(d.status.phase, Some(Phase::Authorizing));
    assert_eq!(cond(&d, "KeyAuthorized").reason, "GrantPropagating");
    // Azure took the grant and is transitioning: still Authorizing, the grant is no longer awaited.
    c.status = d.status;
    c.facts.cache = Some(cache("Creating", "Transitioning"));
    let d = c.run();
    assert_eq!(d.status.phase, Some(Phase::Authorizing));
    assert_eq!(d.action, Action::None);
    assert_eq!(cond(&d, "KeyAuthorized").status, "Unknown");
}

#[test]
fn rbac_vault_grants_by_role_assignment() {
    let mut c = Case::new();
    c.facts.vault = Some(VaultFacts::Usable { protected: true, rbac: true });
    c.facts.cache = Some(cache("Creating", "WaitingForKey"));
    match c.run().action {
        Action::Grant(g) => assert_eq!(g.kind, GrantKind::RoleAssignment),
        other => panic!("expected a grant, got {other:?}"),
    }
}

/// A poll that finds nothing new writes nothing: a status that changed with the clock alone (a countdown in a
/// message) cost one apiserver write per poll per waiting cache, 227 writes/s at 1000 caches in `make bench`.
#[test]
fn a_status_does_not_change_with_the_clock_alone() {
    let granted = |c: &mut Case| {
        c.status.grants = vec![GrantRecord { made: true, ..grant("sa-principal", true) }];
    };
    let manual = |c: &mut Case| c.spec.key_access = KeyAccess::Manual;
    type Setup = fn(&mut Case);
    let cases: [(&str, &str, &str, Setup); 6] = [
        ("creating", "Creating", "Transitioning", |_| {}),
        ("granting", "Creating", "WaitingForKey", |_| {}),
        ("propagating", "Creating", "WaitingForKey", granted),
        ("picked up", "Creating", "Transitioning", granted),
        ("manual", "Creating", "WaitingForKey", manual),
        ("ready", "Succeeded", "Healthy", granted),
    ];
    for (name, prov, health, setup) in cases {
        let mut c = Case::new();
        setup(&mut c);
        c.facts.cache = Some(cache(prov, health));
        c.facts.now = t0() + mins(3);
        // Settle: the status the first poll wrote is what the next poll starts from.
        for _ in 0..2 {
            c.status = c.run().status;
        }
        let before = c.status.clone();
        c.facts.now += SignedDuration::from_secs(15);
        let d = c.run();
        assert_eq!(d.status, before, "{name}: only the clock moved, yet the status changed");
    }
}

#[test]
fn waiting_for_key_enables_vault_protection_first() {
    let mut c = Case::new();
    c.facts.vault = Some(VaultFacts::Usable { protected: false, rbac: false });
    c.facts.cache = Some(cache("Creating", "WaitingForKey"));
    assert_eq!(c.run().action, Action::EnableVaultProtection);
}

#[test]
fn manual_mode_reports_principal_and_deadline_and_never_grants() {
    let mut c = Case::new();
    c.spec.key_access = KeyAccess::Manual;
    c.facts.cache = Some(cache("Creating", "WaitingForKey"));
    c.facts.now = t0() + mins(10);
    let d = c.run();
    assert_eq!(d.action, Action::None);
    assert_eq!(d.status.phase, Some(Phase::WaitingForKey));
    assert_eq!(d.status.principal_id.as_deref(), Some("sa-principal"));
    assert_eq!(d.status.authorization_deadline, Some(Time(t0() + mins(90))));
    let msg = &cond(&d, "KeyAuthorized").message;
    assert!(msg.contains("sa-principal") && msg.contains("before 2026-11-29T11:30:00Z"), "{msg}");
    assert!(!d.events.iter().any(|e| e.reason == "AuthorizationDeadlineApproaching"), "no warning 80 minutes out");
    // 20 minutes before the deadline: a Warning event, and a requeue well before the deadline.
    c.facts.now = t0() + mins(70);
    let d = c.run();
    let warning = d.events.iter().find(|e| e.warning && e.reason == "AuthorizationDeadlineApproaching");
    assert!(warning.is_some_and(|e| e.message.contains("20m00s left")), "{:?}", d.events);
    // Once per threshold (30, 10, 5 minutes left), not on every poll.
    let warnings = |c: &mut Case, at: i64| {
        c.facts.now = t0() + mins(at);
        let d = c.run();
        c.status = d.status.clone();
        d.events.iter().filter(|e| e.reason == "AuthorizationDeadlineApproaching").count()
    };
    let mut w = Case { status: d.status.clone(), ..Case::new() };
    w.spec.key_access = KeyAccess::Manual;
    w.facts.cache = Some(cache("Creating", "WaitingForKey"));
    let seen: Vec<usize> = [71, 75, 80, 81, 85, 86, 89].iter().map(|m| warnings(&mut w, *m)).collect();
    assert_eq!(seen, [0, 0, 1, 0, 1, 0, 0], "10 and 5 minutes left warn once each");
    assert!(d.requeue_after <= Duration::from_secs(15));
}

#[test]
fn requeue_tightens_near_the_deadline() {
    let mut c = Case::new();
    c.spec.key_access = KeyAccess::Manual;
    c.facts.cache = Some(cache("Creating", "WaitingForKey"));
    c.facts.now = t0() + mins(90) - SignedDuration::from_secs(20);
    let d = c.run();
    assert_eq!(d.requeue_after, Duration::from_secs(5), "a quarter of the 20 s left");
}

#[test]
fn missed_deadline_fails_with_fail_policy() {
    let mut c = Case::new();
    c.spec.key_access = KeyAccess::Manual;
    c.facts.cache = Some(cache("Creating", "WaitingForKey"));
    c.facts.now = t0() + mins(91);
    let d = c.run();
    assert_eq!(d.status.phase, Some(Phase::Failed));
    assert_eq!(d.action, Action::None);
    assert_eq!(cond(&d, "Stalled").reason, "AuthorizationWindowMissed");
    assert_eq!(cond(&d, "Ready").status, "False");
    assert_eq!(d.status.recreations, 0);
}

/// Found by the chaos campaign (`make chaos SEED=1 N=200`): Azure fails a CMK cache at the very instant its window
/// ends, so the operator, looking a moment later, always saw provisioningState Failed first and reported the generic
/// ProvisioningFailed; the missed window was only named when the operator happened to look before Azure did.
#[test]
fn a_window_missed_is_reported_as_such_after_azure_failed_the_cache() {
    let mut c = Case::new();
    c.spec.key_access = KeyAccess::Manual;
    c.facts.cache = Some(cache("Failed", "Down"));
    c.facts.now = t0() + mins(90);
    let d = c.run();
    assert_eq!(d.status.phase, Some(Phase::Failed));
    assert_eq!(d.action, Action::None);
    assert_eq!(cond(&d, "Stalled").reason, "AuthorizationWindowMissed");
    assert_eq!(cond(&d, "KeyAuthorized").reason, "AuthorizationWindowMissed");
    assert!(
        cond(&d, "Stalled").message.contains("not authorized before the deadline"),
        "{}",
        cond(&d, "Stalled").message
    );
    // Before the deadline a failure is something else, and says only what Azure says.
    c.facts.now = t0() + mins(30);
    assert_eq!(cond(&c.run(), "Stalled").reason, "ProvisioningFailed");
}

#[test]
fn provisioning_failed_recreates_within_the_limit_and_counts_once() {
    let mut c = Case::new();
    c.spec.on_authorization_timeout = AuthorizationTimeoutPolicy::Recreate;
    c.facts.cache = Some(cache("Failed", "Down"));
    let d = c.run();
    assert_eq!(d.action, Action::Delete);
    assert_eq!(d.status.phase, Some(Phase::Deleting));
    assert_eq!(d.status.recreations, 1);
    // A retry of the same step (e.g. the DELETE failed) does not count again.
    c.status = d.status;
    let d = c.run();
    assert_eq!(d.action, Action::Delete);
    assert_eq!(d.status.recreations, 1);
    // Azure deleting: wait.
    c.status = d.status;
    c.facts.cache = Some(cache("Deleting", "Transitioning"));
    let d = c.run();
    assert_eq!(d.action, Action::None);
    assert_eq!(cond(&d, "Reconciling").reason, "Recreating");
    // Gone, but the old system principal's grant was recorded: revoke it first.
    c.status = d.status;
    c.status.grants = vec![grant("sa-principal", true)];
    c.facts.cache = None;
    let d = c.run();
    assert_eq!(d.action, Action::RevokeGrant(grant("sa-principal", true)));
    c.status = d.status;
    action_succeeded(&mut c.status, &Action::RevokeGrant(grant("sa-principal", true)));
    assert!(c.status.grants.is_empty());
    // Then a new cache, with the old cache's facts forgotten.
    let d = c.run();
    assert_eq!(d.action, Action::Create { key_url: Some(KID.into()) });
    assert_eq!(d.status.phase, Some(Phase::Creating));
    assert_eq!(d.status.principal_id, None);
    assert_eq!(d.status.authorization_deadline, None);
    assert_eq!(d.status.recreations, 1);
}

/// Found by the chaos campaign (`make chaos SEED=2 N=200`): with `maxRecreations: 1`, the DELETE of the failed cache
/// met a 500; the next look counted the re-creation as used up, reported "the re-creation limit (1) is reached" and
/// never deleted nor re-created the cache.
#[test]
fn a_recreation_whose_delete_failed_is_retried_even_at_the_limit() {
    let mut c = Case::new();
    c.spec.key_access = KeyAccess::Manual;
    c.spec.on_authorization_timeout = AuthorizationTimeoutPolicy::Recreate;
    c.spec.max_recreations = 1;
    c.facts.cache = Some(cache("Failed", "Down"));
    c.facts.now = t0() + mins(91);
    let d = c.run();
    assert_eq!(d.action, Action::Delete);
    assert_eq!(d.status.recreations, 1);
    // The DELETE failed (Azure answered 500): the recorded status is all the next look has.
    c.status = d.status;
    let d = c.run();
    assert_eq!(d.action, Action::Delete, "the re-creation goes on: {:?}", cond(&d, "Ready").message);
    assert_eq!(d.status.phase, Some(Phase::Deleting));
    assert_eq!(d.status.recreations, 1, "and is still counted once");
    // Re-created, and that cache also missed its window: now the limit holds.
    let mut c = Case::new();
    c.spec.on_authorization_timeout = AuthorizationTimeoutPolicy::Recreate;
    c.spec.max_recreations = 1;
    c.status.recreations = 1;
    c.status.phase = Some(Phase::WaitingForKey);
    c.facts.cache = Some(cache("Failed", "Down"));
    c.facts.now = t0() + mins(91);
    let d = c.run();
    assert_eq!(d.action, Action::None);
    assert_eq!(d.status.phase, Some(Phase::Failed));
    assert!(cond(&d, "Stalled").message.contains("re-creation limit"));
}

#[test]
fn recreation_limit_reached_fails() {
    let mut c = Case::new();
    c.spec.on_authorization_timeout = AuthorizationTimeoutPolicy::Recreate;
    c.status.recreations = 2;
    c.facts.cache = Some(cache("Failed", "Down"));
    let d = c.run();
    assert_eq!(d.action, Action::None);
    assert_eq!(d.status.phase, Some(Phase::Failed));
    assert!(cond(&d, "Stalled").message.contains("re-creation limit"));
}

#[test]
fn healthy_cache_is_ready_and_resyncs_slowly() {
    let mut c = Case::new();
    c.status.phase = Some(Phase::Authorizing);
    c.facts.cache = Some(cache("Succeeded", "Healthy"));
    let d = c.run();
    assert_eq!(d.status.phase, Some(Phase::Ready));
    assert_eq!(d.action, Action::None);
    assert_eq!(cond(&d, "Ready").status, "True");
    assert_eq!(cond(&d, "Reconciling").status, "False");
    assert_eq!(cond(&d, "Stalled").status, "False");
    assert_eq!(cond(&d, "KeyAuthorized").status, "True");
    assert_eq!(d.status.authorization_deadline, None);
    assert_eq!(d.status.active_key_url.as_deref(), Some(KID));
    assert_eq!(d.requeue_after, Timing::default().resync);
    assert!(d.events.iter().any(|e| e.reason == "Ready"));
}

#[test]
fn key_version_change_updates_then_returns_to_ready() {
    let mut c = Case::new();
    c.status.phase = Some(Phase::Ready);
    c.facts.cache = Some(cache("Succeeded", "Healthy"));
    c.facts.key = Some(KeyFacts::Valid { kid: KID2.into() });
    let d = c.run();
    assert_eq!(d.action, Action::Update { key_url: Some(KID2.into()) });
    assert_eq!(d.status.phase, Some(Phase::Updating));
    c.status = d.status;
    c.facts.cache = Some(CacheFacts { key_url: Some(KID2.into()), ..cache("Updating", "Healthy") });
    let d = c.run();
    assert_eq!(d.status.phase, Some(Phase::Updating));
    assert_eq!(d.action, Action::None);
    c.status = d.status;
    c.facts.cache = Some(CacheFacts { key_url: Some(KID2.into()), ..cache("Succeeded", "Healthy") });
    assert_eq!(c.run().status.phase, Some(Phase::Ready));
}

#[test]
fn rotation_flag_reset_by_azure_is_reapplied_but_versions_are_not_fought() {
    let mut c = Case::new();
    c.spec.encryption.as_mut().unwrap().rotate_to_latest_key_version = true;
    c.facts.cache = Some(CacheFacts { rotation_enabled: false, ..cache("Succeeded", "Healthy") });
    assert!(matches!(c.run().action, Action::Update { .. }), "flag reset to false is re-applied");
    // Azure rotated to a newer version by itself: not drift.
    c.facts.key = Some(KeyFacts::Valid { kid: KID.into() });
    c.facts.cache =
        Some(CacheFacts { rotation_enabled: true, key_url: Some(KID2.into()), ..cache("Succeeded", "Healthy") });
    assert_eq!(c.run().action, Action::None);
}

#[test]
fn invalid_new_key_keeps_the_cache_and_stalls() {
    let mut c = Case::new();
    c.facts.cache = Some(cache("Succeeded", "Healthy"));
    c.facts.key = Some(KeyFacts::Invalid { reason: Reason::KeyDisabled, message: "disabled".into() });
    let d = c.run();
    assert_eq!(d.action, Action::None);
    assert_eq!(cond(&d, "Stalled").reason, "KeyDisabled");
}

#[test]
fn tag_drift_is_patched() {
    let mut c = Case::new();
    c.spec.tags.insert("team".into(), "genomics".into());
    c.facts.cache = Some(cache("Succeeded", "Healthy"));
    assert!(matches!(c.run().action, Action::Update { .. }));
}

#[test]
fn deletion_follows_policy() {
    // Delete: cache present → DELETE; deleting → wait; gone with SA grant → revoke; then release.
    let mut c = Case::new();
    c.deleting = true;
    c.status.grants = vec![grant("sa-principal", true)];
    c.facts.cache = Some(cache("Succeeded", "Healthy"));
    assert_eq!(c.run().action, Action::Delete);
    c.facts.cache = Some(cache("Deleting", "Transitioning"));
    assert_eq!(c.run().action, Action::None);
    c.facts.cache = None;
    assert_eq!(c.run().action, Action::RevokeGrant(grant("sa-principal", true)));
    c.status.grants = vec![grant("ua", false)];
    assert_eq!(c.run().action, Action::RemoveFinalizer, "a user-assigned grant outlives the cache");
    c.status.grants.clear();
    assert_eq!(c.run().action, Action::RemoveFinalizer);
    // Orphan: never deletes.
    c.spec.deletion_policy = DeletionPolicy::Orphan;
    c.facts.cache = Some(cache("Succeeded", "Healthy"));
    let d = c.run();
    assert_eq!(d.action, Action::RemoveFinalizer);
    assert_eq!(d.status.phase, Some(Phase::Deleting));
}

#[test]
fn rejected_create_stalls_and_is_not_retried_until_the_spec_changes() {
    let mut c = Case::new();
    let d = c.run();
    let err = ActionError {
        status: Some(409),
        code: "OperationNotAllowed".into(),
        message: "Unable to create HPC Cache due to product retirement".into(),
        retryable: false,
        retry_after: None,
    };
    let f = action_failed(&d.status, Some(1), &d.action, &err, t0(), Timing::default());
    assert_eq!(f.status.phase, Some(Phase::Failed));
    let stalled = f.status.conditions.iter().find(|c| c.type_ == "Stalled").unwrap();
    assert_eq!(stalled.reason, Reason::CreateRejected.as_str());
    assert!(stalled.message.contains("product retirement"));
    c.status = f.status;
    let again = c.run();
    assert_eq!(again.action, Action::None, "no retry loop");
    // A new generation (the user changed the spec) tries again.
    let next = decide(&Input {
        spec: &c.spec,
        generation: Some(2),
        status: &c.status,
        deleting: false,
        cache_id: CACHE_ID,
        owner: OWNER,
        legacy_owner: LEGACY_OWNER,
        policy: c.policy.clone(),
        adopt: c.adopt,
        facts: &c.facts,
        timing: Timing::default(),
    });
    assert!(matches!(next.action, Action::Create { .. }));
}

#[test]
fn retryable_errors_requeue_after_retry_after() {
    let d = Case::new().run();
    let err = ActionError {
        status: Some(429),
        code: "TooManyRequests".into(),
        message: "throttled".into(),
        retryable: true,
        retry_after: Some(Duration::from_secs(17)),
    };
    let f = action_failed(&d.status, Some(1), &d.action, &err, t0(), Timing::default());
    assert_eq!(f.requeue_after, Duration::from_secs(17));
    assert_eq!(f.status.phase, Some(Phase::Creating));
    assert!(f.events.iter().any(|e| e.warning && e.message.contains("throttled")));
}

#[test]
fn conditions_keep_transition_time_while_status_is_unchanged() {
    let mut c = Case::new();
    c.facts.cache = Some(cache("Creating", "Transitioning"));
    let first = c.run();
    c.status = first.status.clone();
    c.facts.now = t0() + mins(5);
    let second = c.run();
    assert_eq!(cond(&first, "Reconciling").last_transition_time, cond(&second, "Reconciling").last_transition_time);
}

fn key<'a>(kty: &'a str, bits: usize, ops: &'a [String]) -> KeyProperties<'a> {
    KeyProperties { kid: KID, kty, rsa_bits: Some(bits), key_ops: ops, enabled: true, not_before: None, expires: None }
}

#[test]
fn key_checks() {
    let now = t0();
    let all: Vec<String> = ["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"].map(String::from).into();
    assert_eq!(check_key(&key("RSA", 2048, &all), now), KeyFacts::Valid { kid: KID.into() });
    assert!(matches!(check_key(&key("RSA-HSM", 2048, &all), now), KeyFacts::Valid { .. }));
    let reason = |f: KeyFacts| match f {
        KeyFacts::Invalid { reason, .. } => reason.as_str(),
        KeyFacts::Valid { .. } => "Valid",
    };
    assert_eq!(reason(check_key(&KeyProperties { rsa_bits: None, ..key("EC", 0, &all) }, now)), "KeyNotRSA");
    assert_eq!(reason(check_key(&key("RSA", 4096, &all), now)), "KeySizeUnsupported");
    assert_eq!(reason(check_key(&KeyProperties { enabled: false, ..key("RSA", 2048, &all) }, now)), "KeyDisabled");
    let nbf = KeyProperties { not_before: Some(now + mins(1)), ..key("RSA", 2048, &all) };
    assert_eq!(reason(check_key(&nbf, now)), "KeyNotYetValid");
    assert_eq!(reason(check_key(&KeyProperties { expires: Some(now), ..key("RSA", 2048, &all) }, now)), "KeyExpired");
    // Key Vault did not report key_ops: nothing to hold against the key.
    assert!(matches!(check_key(&key("RSA", 2048, &[]), now), KeyFacts::Valid { .. }));
}

#[test]
fn a_key_without_wrap_and_unwrap_is_refused_with_the_missing_operations() {
    let ops: Vec<String> = ["sign", "verify"].map(String::from).into();
    let KeyFacts::Invalid { reason, message } = check_key(&key("RSA", 2048, &ops), t0()) else {
        panic!("a sign/verify key is not usable for a cache")
    };
    assert_eq!(reason, Reason::KeyOperationsMissing);
    assert!(message.contains("does not allow wrapKey and unwrapKey"), "{message}");
    assert!(message.contains("sign, verify"), "{message}");
    let ops: Vec<String> = ["WRAPKEY", "unwrapkey"].map(String::from).into();
    assert!(matches!(check_key(&key("RSA", 2048, &ops), t0()), KeyFacts::Valid { .. }), "case does not matter");
}

#[test]
fn vault_checks() {
    assert_eq!(check_vault("eastus", "eastus", true, false), VaultFacts::Usable { protected: true, rbac: false });
    assert_eq!(check_vault("East US", "eastus", false, true), VaultFacts::Usable { protected: false, rbac: true });
    assert!(
        matches!(check_vault("westus", "eastus", true, false), VaultFacts::Invalid { reason, .. } if reason == Reason::VaultRegionMismatch)
    );
}

#[test]
fn strip_version_keeps_vault_and_name() {
    assert_eq!(strip_version(KID), "https://kv.vault.azure.net/keys/k");
    assert_eq!(strip_version("https://kv.vault.azure.net/keys/k/"), "https://kv.vault.azure.net/keys/k");
}

#[test]
fn vault_policy() {
    let sub = SUB;
    assert!(vault_allowed(VAULT, sub, None).is_ok());
    let other =
        "/subscriptions/99999999-2222-3333-4444-555555555555/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv";
    assert!(vault_allowed(other, sub, None).is_err(), "default: own subscription only");
    let scopes = format!("/subscriptions/{sub}/resourceGroups/RG , /subscriptions/x/resourceGroups/y");
    assert!(vault_allowed(VAULT, sub, Some(&scopes)).is_ok(), "case-insensitive, spaces trimmed");
    let err = vault_allowed(VAULT, sub, Some(&format!("/subscriptions/{sub}/resourceGroups/r"))).unwrap_err();
    assert!(err.contains("hpccache.io/allowed-vault-scopes"), "{err}");
    // Prefixes match whole segments: rg does not cover rg2.
    let rg2 = VAULT.replace("/rg/", "/rg2/");
    assert!(vault_allowed(&rg2, sub, Some(&format!("/subscriptions/{sub}/resourceGroups/rg"))).is_err());
    assert!(vault_allowed(VAULT, sub, Some("")).is_err(), "an empty list allows nothing");
}

#[test]
fn a_disallowed_vault_is_never_granted_on() {
    let mut c = Case::new();
    c.facts.vault = Some(VaultFacts::Invalid { reason: Reason::VaultNotAllowed, message: "no".into() });
    c.facts.key = None;
    let d = c.run();
    assert_eq!(d.action, Action::None);
    assert_eq!(cond(&d, "Stalled").reason, "VaultNotAllowed");
    // Even for an existing cache waiting for its key.
    c.facts.cache = Some(cache("Creating", "WaitingForKey"));
    let d = c.run();
    assert_eq!(d.action, Action::None);
    assert_eq!(cond(&d, "Stalled").reason, "VaultNotAllowed");
}

#[test]
fn an_unreadable_cache_is_reported_as_stalled_with_azures_message() {
    let status = HpcCacheStatus { phase: Some(Phase::Ready), ..Default::default() };
    let err = ActionError {
        status: Some(403),
        code: "AuthorizationFailed".into(),
        message: "The client does not have authorization to perform action".into(),
        retryable: false,
        retry_after: None,
    };
    let f = action_failed(&status, Some(1), &Action::None, &err, t0(), Timing::default());
    let stalled = f.status.conditions.iter().find(|c| c.type_ == "Stalled").unwrap();
    assert_eq!((stalled.status.as_str(), stalled.reason.as_str()), ("True", "AzureRequestRejected"));
    assert!(stalled.message.starts_with("reading the cache's state from Azure failed"), "{}", stalled.message);
    assert!(stalled.message.contains("AuthorizationFailed"));
    assert_eq!(f.status.phase, Some(Phase::Ready), "the phase is what was last known");
}

#[test]
fn a_failed_grant_is_not_remembered_as_made_and_is_retried_soon() {
    let mut c = Case::new();
    c.facts.cache = Some(cache("Creating", "WaitingForKey"));
    let d = c.run();
    let Action::Grant(g) = d.action.clone() else { panic!("expected a grant, got {:?}", d.action) };
    let err = ActionError {
        status: Some(403),
        code: "Forbidden".into(),
        message: "the operator may not write access policies".into(),
        retryable: false,
        retry_after: None,
    };
    let f = action_failed(&d.status, Some(1), &d.action, &err, t0(), Timing::default());
    assert!(f.status.grants.is_empty(), "a grant that failed must not count as made");
    assert!(f.requeue_after <= Timing::default().poll, "the deadline is running: try again soon");
    c.status = f.status;
    assert_eq!(c.run().action, Action::Grant(g), "the next look grants again");
}

/// A cache that was Ready once (months ago, say).
fn authorized(mut c: Case) -> Case {
    c.status.authorized_at = Some(Time(t0() + mins(20)));
    c.status.phase = Some(Phase::Ready);
    c.facts.now = t0() + mins(60 * 24 * 90);
    c
}

#[test]
fn the_window_ends_when_the_cache_is_first_ready() {
    let mut c = Case::new();
    c.facts.cache = Some(cache("Succeeded", "Healthy"));
    c.facts.now = t0() + mins(20);
    let d = c.run();
    assert_eq!(d.status.authorized_at, Some(Time(t0() + mins(20))));
    c.status = d.status;
    c.facts.now = t0() + mins(500);
    assert_eq!(c.run().status.authorized_at, Some(Time(t0() + mins(20))), "recorded once");
}

#[test]
fn an_old_cache_updating_or_failing_is_never_deleted_by_the_window() {
    for (prov, health) in
        [("Updating", "Upgrading"), ("Updating", "Transitioning"), ("Failed", "Down"), ("Canceled", "Healthy")]
    {
        let mut c = authorized(Case::new());
        c.spec.on_authorization_timeout = AuthorizationTimeoutPolicy::Recreate;
        c.facts.cache = Some(cache(prov, health));
        let d = c.run();
        assert_eq!(d.action, Action::None, "{prov}/{health}");
        assert_eq!(d.status.recreations, 0, "{prov}/{health}");
        assert_eq!(d.status.authorization_deadline, None, "{prov}/{health}");
        if prov == "Updating" {
            assert_eq!(d.status.phase, Some(Phase::Updating));
        } else {
            assert_eq!(cond(&d, "Stalled").reason, "ProvisioningFailed");
        }
    }
}

#[test]
fn an_old_cache_that_lost_key_access_is_granted_again_not_failed() {
    let mut c = authorized(Case::new());
    c.spec.on_authorization_timeout = AuthorizationTimeoutPolicy::Recreate;
    c.facts.cache = Some(cache("Succeeded", "WaitingForKey"));
    let d = c.run();
    assert_eq!(d.action, Action::Grant(grant("sa-principal", true)));
    assert_eq!(cond(&d, "KeyAuthorized").reason, "KeyAccessLost");
    assert_eq!(d.status.authorization_deadline, None);
    c.spec.key_access = KeyAccess::Manual;
    let d = c.run();
    assert_eq!(d.action, Action::None);
    assert!(d.events.iter().any(|e| e.warning && e.reason == "KeyAccessLost"));
}

#[test]
fn moving_to_a_new_vault_protects_and_grants_before_pointing_the_cache_at_it() {
    let new_vault = VAULT.replace("/vaults/kv", "/vaults/kv2");
    let new_kid = "https://kv2.vault.azure.net/keys/k/0123456789abcdef0123456789abcdef";
    let mut c = authorized(Case::new());
    c.status.grants = vec![GrantRecord { made: true, ..grant("sa-principal", true) }];
    c.spec.encryption.as_mut().unwrap().key_vault_id = new_vault.clone();
    c.facts.cache = Some(cache("Succeeded", "Healthy"));
    c.facts.key = Some(KeyFacts::Valid { kid: new_kid.into() });
    c.facts.vault = Some(VaultFacts::Usable { protected: false, rbac: false });
    assert_eq!(c.run().action, Action::EnableVaultProtection);
    c.facts.vault = Some(VaultFacts::Usable { protected: true, rbac: false });
    let d = c.run();
    let Action::Grant(g) = d.action.clone() else { panic!("expected a grant, got {:?}", d.action) };
    assert_eq!(g.scope, new_vault);
    assert_eq!(d.status.grants.len(), 2, "the old vault's grant is still recorded, to revoke on delete");
    c.status = d.status;
    action_succeeded(&mut c.status, &Action::Grant(g));
    let d = c.run();
    assert_eq!(d.action, Action::Update { key_url: Some(new_kid.into()) });
    assert_eq!(d.status.phase, Some(Phase::Updating));
}

#[test]
fn a_ready_cache_whose_new_vault_is_unusable_is_not_reported_ready() {
    let mut c = authorized(Case::new());
    c.facts.cache = Some(cache("Succeeded", "Healthy"));
    c.facts.key = None;
    c.facts.vault = Some(VaultFacts::Invalid { reason: Reason::VaultNotAllowed, message: "no".into() });
    let d = c.run();
    assert_eq!(d.action, Action::None);
    assert_eq!(cond(&d, "Ready").status, "False");
    assert_eq!(cond(&d, "Stalled").reason, "VaultNotAllowed");
}

#[test]
fn tag_drift_with_rotation_keeps_the_version_azure_rotated_to() {
    let mut c = authorized(Case::new());
    c.spec.encryption.as_mut().unwrap().rotate_to_latest_key_version = true;
    c.spec.tags.insert("team".into(), "x".into());
    c.facts.cache =
        Some(CacheFacts { rotation_enabled: true, key_url: Some(KID2.into()), ..cache("Succeeded", "Healthy") });
    assert_eq!(c.run().action, Action::Update { key_url: Some(KID2.into()) }, "no roll-back to the pinned version");
}

#[test]
fn tag_drift_is_patched_on_microsoft_managed_caches_too() {
    let mut c = authorized(Case::new());
    c.spec.encryption = None;
    c.spec.tags.insert("team".into(), "x".into());
    c.facts.cache = Some(CacheFacts { key_url: None, key_vault_id: None, ..cache("Succeeded", "Healthy") });
    assert_eq!(c.run().action, Action::Update { key_url: None });
}

#[test]
fn only_an_azure_refusal_blocks_re_creation() {
    let d = Case::new().run();
    let no_answer = ActionError {
        status: None,
        code: "Unknown".into(),
        message: "token".into(),
        retryable: false,
        retry_after: None,
    };
    let f = action_failed(&d.status, Some(1), &d.action, &no_answer, t0(), Timing::default());
    assert_ne!(cond(&f, "Stalled").reason, Reason::CreateRejected.as_str());
    assert_eq!(f.status.phase, Some(Phase::Creating));
}

#[test]
fn a_grant_that_cannot_be_revoked_does_not_block_deletion() {
    let mut c = Case::new();
    c.deleting = true;
    c.status.grants = vec![GrantRecord { made: true, ..grant("sa-principal", true) }];
    let d = c.run();
    let err = ActionError {
        status: Some(403),
        code: "Forbidden".into(),
        message: "no".into(),
        retryable: false,
        retry_after: None,
    };
    let f = action_failed(&d.status, Some(1), &d.action, &err, t0(), Timing::default());
    assert!(f.status.grants.is_empty());
    assert!(f.events.iter().any(|e| e.reason == "GrantNotRevoked"));
    c.status = f.status;
    assert_eq!(c.run().action, Action::RemoveFinalizer);
}

#[test]
fn a_cache_owned_by_another_object_is_left_alone() {
    let mut c = authorized(Case::new());
    let mut theirs = cache("Succeeded", "Healthy");
    theirs.tags.insert(OWNER_TAG.into(), "other-ns/other".into());
    c.facts.cache = Some(theirs.clone());
    c.spec.tags.insert("team".into(), "x".into());
    let d = c.run();
    assert_eq!(d.action, Action::None, "no tag or key update on someone else's cache");
    assert_eq!(cond(&d, "Stalled").reason, "CacheOwnedByAnother");
    assert!(cond(&d, "Stalled").message.contains("other-ns/other"));
    // Deleting this object never deletes their cache.
    c.deleting = true;
    assert_eq!(c.run().action, Action::RemoveFinalizer);
}

#[test]
fn a_cache_made_outside_the_operator_is_left_alone_unless_adopted() {
    let mut c = authorized(Case::new());
    c.facts.cache = Some(CacheFacts { tags: Default::default(), ..cache("Succeeded", "Healthy") });
    let d = c.run();
    assert_eq!(d.action, Action::None, "nothing is written to a cache the operator did not make");
    assert_eq!(
        (cond(&d, "Stalled").status.as_str(), cond(&d, "Stalled").reason.as_str()),
        ("True", "CacheExistsNotOwned")
    );
    assert!(cond(&d, "Stalled").message.contains("hpccache.io/adopt"), "{}", cond(&d, "Stalled").message);
    c.deleting = true;
    assert_eq!(c.run().action, Action::RemoveFinalizer, "deleting the object never deletes it");
    // Asked to adopt: the owner tag is added and the cache is managed.
    c.deleting = false;
    c.adopt = true;
    assert!(matches!(c.run().action, Action::Update { .. }), "the owner tag is added");
    assert_eq!(desired_tags(&c.spec, OWNER).get(OWNER_TAG).map(String::as_str), Some(OWNER));
}

#[test]
fn the_owner_tag_names_the_cluster_and_a_legacy_tag_is_rewritten() {
    assert_eq!(owner_tag("cluster-a", "research", "genomics"), OWNER);
    let mut c = authorized(Case::new());
    // Written before the cluster was part of the tag: still this object's, and brought up to date.
    c.facts.cache = Some(CacheFacts {
        tags: [(OWNER_TAG.to_string(), LEGACY_OWNER.to_string())].into(),
        ..cache("Succeeded", "Healthy")
    });
    assert!(matches!(c.run().action, Action::Update { .. }));
    // The same namespace/name in another cluster is someone else's.
    c.facts.cache = Some(CacheFacts {
        tags: [(OWNER_TAG.to_string(), "cluster-b/research/genomics".to_string())].into(),
        ..cache("Succeeded", "Healthy")
    });
    let d = c.run();
    assert_eq!(d.action, Action::None);
    assert_eq!(cond(&d, "Stalled").reason, "CacheOwnedByAnother");
    c.deleting = true;
    assert_eq!(c.run().action, Action::RemoveFinalizer);
}

#[test]
fn skip_reports_and_writes_nothing() {
    let mut c = Case::new();
    c.policy = Ok(ReconcilePolicy::Skip);
    // No cache yet: the create is not made, and no intent for it is recorded.
    let d = c.run();
    assert_eq!(d.action, Action::None);
    assert!(d.status.create_requested_at.is_none());
    let reconciling = cond(&d, "Reconciling");
    assert_eq!((reconciling.status.as_str(), reconciling.reason.as_str()), ("False", "ReconcileSkipped"));
    assert!(reconciling.message.contains("creating the cache"), "{}", reconciling.message);
    // A cache waiting for its key is reported, and not granted.
    c.facts.cache = Some(cache("Creating", "WaitingForKey"));
    let d = c.run();
    assert_eq!(d.action, Action::None);
    assert!(d.status.grants.is_empty(), "no grant intent");
    assert_eq!(d.status.health_state.as_deref(), Some("WaitingForKey"));
    // A key change on a Ready cache is not applied.
    let mut c = authorized(Case::new());
    c.policy = Ok(ReconcilePolicy::Skip);
    c.facts.cache = Some(cache("Succeeded", "Healthy"));
    c.facts.key = Some(KeyFacts::Valid { kid: KID2.into() });
    assert_eq!(c.run().action, Action::None);
    c.policy = Ok(ReconcilePolicy::Manage);
    assert!(matches!(c.run().action, Action::Update { .. }), "removing skip applies it");
    // Deleting under skip keeps the cache.
    c.policy = Ok(ReconcilePolicy::Skip);
    c.deleting = true;
    assert_eq!(c.run().action, Action::RemoveFinalizer);
}

#[test]
fn detach_on_delete_keeps_the_cache_and_its_grants() {
    let mut c = authorized(Case::new());
    c.policy = Ok(ReconcilePolicy::DetachOnDelete);
    c.facts.cache = Some(cache("Succeeded", "Healthy"));
    c.status.grants = vec![GrantRecord { made: true, ..grant("sa-principal", true) }];
    assert_eq!(c.run().action, Action::None, "managed as usual while the object lives");
    c.deleting = true;
    let d = c.run();
    assert_eq!(d.action, Action::RemoveFinalizer);
    assert_eq!(cond(&d, "Reconciling").reason, "Detaching");
    assert_eq!(d.status.grants.len(), 1, "the grant is not revoked");
}

#[test]
fn an_unknown_policy_writes_nothing_and_says_why() {
    let mut c = Case::new();
    c.policy = Err("hpccache.io/reconcile-policy: \"pause\" is not one of manage, skip, detach-on-delete".into());
    let d = c.run();
    assert_eq!(d.action, Action::None);
    let stalled = cond(&d, "Stalled");
    assert_eq!((stalled.status.as_str(), stalled.reason.as_str()), ("True", "InvalidReconcilePolicy"));
    assert!(stalled.message.contains("\"pause\""), "{}", stalled.message);
}

#[test]
fn events_are_sent_once_per_change() {
    let mut c = Case::new();
    c.facts.key = Some(KeyFacts::Invalid { reason: Reason::KeyDisabled, message: "disabled".into() });
    let first = c.run();
    assert!(first.events.iter().any(|e| e.reason == "KeyDisabled"));
    assert!(first.events.iter().any(|e| e.message == "phase Pending"), "no 'Pending -> Pending': {:?}", first.events);
    c.status = first.status;
    let again = c.run();
    assert!(again.events.is_empty(), "nothing new to say: {:?}", again.events);
}

#[test]
fn ready_status_shows_the_short_key_and_the_mount_addresses() {
    let mut c = Case::new();
    c.status.authorized_at = Some(Time(t0()));
    c.facts.cache = Some(CacheFacts {
        mount_addresses: vec!["10.0.0.21".into(), "10.0.0.22".into()],
        ..cache("Succeeded", "Healthy")
    });
    let d = c.run();
    assert_eq!(d.status.phase, Some(Phase::Ready));
    assert_eq!(d.status.active_key.as_deref(), Some("k/0123456789abcdef0123456789abcdef"));
    assert_eq!(d.status.mount_addresses, ["10.0.0.21", "10.0.0.22"]);
    // Gone from Azure: the addresses go too.
    c.status = d.status;
    c.facts.cache = None;
    let d = c.run();
    assert!(d.status.mount_addresses.is_empty() && d.status.active_key.is_none());
}

// ---- regressions found by the property tests (tests/properties.rs) ----

#[test]
fn a_created_at_at_the_end_of_time_does_not_overflow_the_deadline() {
    // Azure's systemData.createdAt is text off the wire; jiff parses years up to 9999, and adding the 90-minute
    // window to such a time panicked.
    let mut c = Case::new();
    let mut waiting = cache("Creating", "WaitingForKey");
    waiting.created_at = Some(Timestamp::MAX - mins(10));
    c.facts.cache = Some(waiting);
    let d = c.run();
    assert_eq!(d.status.authorization_deadline, Some(Time(Timestamp::MAX)), "the deadline saturates");
    assert!(matches!(d.action, Action::Grant(_)), "the window is still open: {:?}", d.action);
}

#[test]
fn an_adopted_healthy_cache_whose_update_failed_is_never_deleted_to_recreate() {
    // provisioningState Failed with health Healthy is a failed update of a working cache. When this status never
    // saw it healthy (adopted, or the status was lost) the Recreate policy deleted it.
    let mut c = Case::new();
    c.spec.on_authorization_timeout = AuthorizationTimeoutPolicy::Recreate;
    c.adopt = true;
    let mut adopted = cache("Failed", "Healthy");
    adopted.tags.clear();
    c.facts.cache = Some(adopted);
    let d = c.run();
    assert_eq!(d.action, Action::None);
    assert_eq!(d.status.phase, Some(Phase::Failed));
    assert_eq!(cond(&d, "Stalled").reason, "ProvisioningFailed");
    assert_eq!(d.status.recreations, 0);
}

#[test]
fn waiting_for_key_without_a_customer_managed_key_grants_nothing() {
    // A grant needs a vault; with Microsoft-managed keys there is none, and the machine sent a grant on scope "".
    for authorized_before in [false, true] {
        let mut c = Case::new();
        c.spec.encryption = None;
        c.facts.key = None;
        c.facts.vault = None;
        c.status.authorized_at = authorized_before.then(|| Time(t0()));
        c.facts.cache = Some(cache("Succeeded", "WaitingForKey"));
        let d = c.run();
        assert_eq!(d.action, Action::None, "authorized before: {authorized_before}");
        assert_eq!(d.status.phase, Some(Phase::WaitingForKey));
        assert_eq!(cond(&d, "Reconciling").reason, "CacheNotHealthy");
        assert!(d.status.grants.is_empty());
    }
}

#[test]
fn a_zero_or_huge_retry_after_is_kept_within_the_poll_floor_and_the_resync() {
    // Retry-After: 0 (or an HTTP date already past) made the requeue zero, so a throttling Azure was asked again at
    // once, in a loop; an absurd one left the object alone for years.
    let timing = Timing::default();
    let err = |after: Duration| ActionError {
        status: Some(429),
        code: "SubscriptionRequestsThrottled".into(),
        message: "throttled".into(),
        retryable: true,
        retry_after: Some(after),
    };
    let status = HpcCacheStatus::default();
    let f = action_failed(&status, Some(1), &Action::Delete, &err(Duration::ZERO), t0(), timing);
    assert_eq!(f.requeue_after, Duration::from_secs(1));
    let f = action_failed(&status, Some(1), &Action::Delete, &err(Duration::from_secs(86_400 * 365)), t0(), timing);
    assert_eq!(f.requeue_after, timing.resync);
    let f = action_failed(&status, Some(1), &Action::Delete, &err(Duration::from_secs(30)), t0(), timing);
    assert_eq!(f.requeue_after, Duration::from_secs(30), "a sensible Retry-After is honoured as it is");
}

#[test]
fn huge_and_unicode_specs_go_through_the_validators_and_the_machine_without_panicking() {
    // What the apiserver stores (tests/crd_validation.rs): unicode tags, 50 tags of 20 KiB, and values the schema
    // would refuse but an older CRD or a direct etcd write could hold (emoji key names, absurdly long ids).
    let mut c = Case::new();
    c.spec.tags = (0..50).map(|i| (format!("团队{i}🧬"), "é".repeat(10_240))).collect();
    let enc = c.spec.encryption.as_mut().unwrap();
    enc.key_name = "cache-key-🔑".into();
    enc.key_vault_id = format!("{VAULT}{}", "\u{202E}k".repeat(5_000));
    for allowed in [None, Some("🔑,,/subscriptions/ü"), Some(&*"/x,".repeat(10_000))] {
        let _ = vault_allowed(&enc.key_vault_id, "ü🔑", allowed);
    }
    let key =
        KeyProperties { kid: "https://kv.vault.azure.net/keys/🔑/\u{0}", kty: "RSA\u{1F511}", ..Default::default() };
    assert!(matches!(check_key(&key, t0()), KeyFacts::Invalid { .. }));
    assert!(matches!(check_vault("east us 🌍", "eastus", true, false), VaultFacts::Invalid { .. }));
    assert_eq!(strip_version("https://kv/keys/🔑/ü/"), "https://kv/keys/🔑");
    let d = c.run();
    assert_eq!(d.action, Action::Create { key_url: Some(KID.into()) });
    let mut existing = cache("Succeeded", "Healthy");
    existing.tags.insert("ü".repeat(100_000), "🧬".into());
    c.facts.cache = Some(existing);
    // The spec names another vault than the cache uses: its identity is granted there first, then the update.
    assert!(matches!(c.run().action, Action::Grant(_) | Action::Update { .. }));
}
