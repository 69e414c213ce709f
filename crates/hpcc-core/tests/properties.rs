//! Property tests of the two state machines: for arbitrary inputs (any spec variant, any recorded status, any
//! facts Azure may report, including values this operator has never seen and timestamps at the edges of the
//! representable range), `decide` never panics and never proposes an action its inputs forbid.
//!
//! Each property is a sentence of docs/design.md (or of the machine's own contract) written as a check; a
//! counterexample is either a bug (fixed, with a named regression test next to the machine) or a property stated
//! too strongly (then the comment at the check says why it was narrowed).

use std::collections::BTreeMap;
use std::time::Duration;

use hpcc_api::v1alpha1::{
    AmlEncryption, AmlFilesystemSpec, AmlFilesystemStatus, AmlIdentity, AuthorizationTimeoutPolicy, AzureLocation,
    BlobIntegration, CacheIdentity, DeletionPolicy, Encryption, GrantKind, GrantRecord, HpcCacheSpec, HpcCacheStatus,
    IdentityType, KeyAccess, MaintenanceWindow, Phase, ReconcilePolicy,
};
use hpcc_core::amlfs::{AmlFacts, AmlInput, BlobAccessFacts, FilesystemFacts, decide_amlfs};
use hpcc_core::{
    Action, ActionError, CacheFacts, Facts, HealthState, IdentityFacts, Input, KeyFacts, OWNER_TAG, ProvisioningState,
    Reason, Timing, VaultFacts, action_failed, decide,
};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;

const SUB: &str = "11111111-2222-3333-4444-555555555555";
const VAULT: &str =
    "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv";
const VAULT2: &str =
    "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv2";
const ACCOUNT: &str = "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/data";
const KID: &str = "https://kv.vault.azure.net/keys/k/0123456789abcdef0123456789abcdef";
const KID2: &str = "https://kv.vault.azure.net/keys/k/fedcba9876543210fedcba9876543210";
const KID_OTHER_VAULT: &str = "https://kv2.vault.azure.net/keys/k/0123456789abcdef0123456789abcdef";
const OWNER: &str = "cluster-a/research/genomics";
const LEGACY_OWNER: &str = "research/genomics";
const CACHE_ID: &str =
    "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg/providers/Microsoft.StorageCache/caches/c";
const AML_ID: &str = "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg/providers/Microsoft.StorageCache/amlFilesystems/l";
/// Principals the generated facts and grant records share, so that "the grant of this cache's identity" happens.
const PRINCIPALS: [&str; 3] = ["sa-principal", "ua-principal", "old-principal"];

fn config() -> ProptestConfig {
    // Counterexamples become named regression tests next to the machine, not files in the tree.
    ProptestConfig { cases: 6000, failure_persistence: None, ..ProptestConfig::default() }
}

fn t0() -> Timestamp {
    "2026-11-29T10:00:00Z".parse().unwrap()
}

// ------------------------------------------------------------------------------------------------ strategies

/// Mostly around t0 (inside and around the 90-minute window), sometimes at the ends of what a timestamp can hold:
/// Azure's `systemData.createdAt` and `Date` are parsed from text and can be anything jiff accepts.
fn time() -> impl Strategy<Value = Timestamp> {
    prop_oneof![
        10 => (-400i64..400).prop_map(|m| t0() + SignedDuration::from_mins(m)),
        1 => (0i64..200).prop_map(|m| Timestamp::MAX - SignedDuration::from_mins(m)),
        1 => (0i64..200).prop_map(|m| Timestamp::MIN + SignedDuration::from_mins(m)),
    ]
}

fn principal() -> impl Strategy<Value = String> {
    select(PRINCIPALS.to_vec()).prop_map(str::to_string)
}

fn reason() -> impl Strategy<Value = Reason> {
    select(vec![
        Reason::KeyNotRSA,
        Reason::KeyDisabled,
        Reason::KeyNotFound,
        Reason::VaultRegionMismatch,
        Reason::VaultNotAllowed,
        Reason::IdentityNotFound,
    ])
}

fn provisioning() -> impl Strategy<Value = ProvisioningState> {
    prop_oneof![
        8 => select(vec!["Succeeded", "Failed", "Canceled", "Creating", "Deleting", "Updating"]),
        // Values Azure may add tomorrow, odd casing, nothing at all.
        2 => select(vec!["Hibernating", "succeeded", "", "Migrating\u{1F680}"]),
    ]
    .prop_map(ProvisioningState::parse)
}

fn health() -> impl Strategy<Value = Option<HealthState>> {
    option::of(
        prop_oneof![
            8 => select(vec![
                "Healthy", "WaitingForKey", "Transitioning", "Degraded", "Down", "Unknown", "Stopped", "StartFailed",
            ]),
            2 => select(vec!["Sleeping", "healthy", "", "Ünbekannt"]),
        ]
        .prop_map(HealthState::parse),
    )
}

fn owner_tag() -> impl Strategy<Value = Option<String>> {
    option::weighted(0.85, select(vec![OWNER, OWNER, OWNER, LEGACY_OWNER, "cluster-b/other/x"]).prop_map(String::from))
}

fn grant() -> impl Strategy<Value = GrantRecord> {
    (
        select(vec![VAULT, VAULT2, ACCOUNT]),
        principal(),
        select(vec![
            GrantKind::AccessPolicy,
            GrantKind::RoleAssignment,
            GrantKind::StorageAccountContributor,
            GrantKind::StorageBlobDataContributor,
        ]),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(scope, principal_id, kind, system_assigned, made)| GrantRecord {
            scope: scope.into(),
            principal_id,
            tenant_id: Some("tenant".into()),
            kind,
            system_assigned,
            made,
        })
}

fn phase() -> impl Strategy<Value = Option<Phase>> {
    option::of(select(vec![
        Phase::Pending,
        Phase::Authorizing,
        Phase::Creating,
        Phase::WaitingForKey,
        Phase::Ready,
        Phase::Updating,
        Phase::Failed,
        Phase::Deleting,
    ]))
}

/// Conditions a previous decision may have left, including the one that blocks re-sending a refused create.
fn conditions(generation: Option<i64>) -> impl Strategy<Value = Vec<Condition>> {
    let one = (
        select(vec!["Ready", "Stalled", "Reconciling", "KeyValid", "KeyAuthorized"]),
        select(vec!["True", "False", "Unknown"]),
        select(vec!["CreateRejected", "Ready", "AuthorizationWindowMissed", "InvalidReconcilePolicy", "Granting"]),
        prop_oneof![Just(generation), option::of(0i64..3)],
    )
        .prop_map(|(t, s, r, g)| Condition {
            type_: t.into(),
            status: s.into(),
            reason: r.into(),
            message: "earlier".into(),
            observed_generation: g,
            last_transition_time: Time(t0()),
        });
    proptest::collection::vec(one, 0..4)
}

fn policy() -> impl Strategy<Value = Result<ReconcilePolicy, String>> {
    prop_oneof![
        6 => Just(Ok(ReconcilePolicy::Manage)),
        2 => Just(Ok(ReconcilePolicy::Skip)),
        2 => Just(Ok(ReconcilePolicy::DetachOnDelete)),
        1 => Just(Err("hpccache.io/reconcile-policy: \"sometimes\" is not one of manage, skip, detach-on-delete".into())),
    ]
}

fn timing() -> impl Strategy<Value = Timing> {
    (1u64..120, 0u64..3600)
        .prop_map(|(poll, extra)| Timing { poll: Duration::from_secs(poll), resync: Duration::from_secs(poll + extra) })
}

fn key_facts() -> impl Strategy<Value = Option<KeyFacts>> {
    option::weighted(
        0.85,
        prop_oneof![
            4 => select(vec![KID, KID2, KID_OTHER_VAULT]).prop_map(|k| KeyFacts::Valid { kid: k.into() }),
            1 => reason().prop_map(|reason| KeyFacts::Invalid { reason, message: "no good".into() }),
        ],
    )
}

fn vault_facts() -> impl Strategy<Value = Option<VaultFacts>> {
    option::weighted(
        0.85,
        prop_oneof![
            4 => (any::<bool>(), any::<bool>()).prop_map(|(protected, rbac)| VaultFacts::Usable { protected, rbac }),
            1 => reason().prop_map(|reason| VaultFacts::Invalid { reason, message: "no good".into() }),
        ],
    )
}

fn identity_facts() -> impl Strategy<Value = Option<IdentityFacts>> {
    option::weighted(
        0.8,
        prop_oneof![
            4 => (principal(), option::of(any::<bool>())).prop_map(|(principal_id, has_key_access)| {
                IdentityFacts::Usable { principal_id, tenant_id: Some("tenant".into()), has_key_access }
            }),
            1 => reason().prop_map(|reason| IdentityFacts::Invalid { reason, message: "no good".into() }),
        ],
    )
}

fn tags() -> impl Strategy<Value = BTreeMap<String, String>> {
    proptest::collection::btree_map(select(vec!["team", "cost-center", "\u{1F4A1}"]), select(vec!["a", "b"]), 0..2)
        .prop_map(|m| m.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
}

// ------------------------------------------------------------------------------------------------ HpcCache

#[derive(Debug, Clone)]
struct Case {
    spec: HpcCacheSpec,
    generation: Option<i64>,
    status: HpcCacheStatus,
    deleting: bool,
    policy: Result<ReconcilePolicy, String>,
    adopt: bool,
    facts: Facts,
    timing: Timing,
}

impl Case {
    fn input(&self) -> Input<'_> {
        Input {
            spec: &self.spec,
            generation: self.generation,
            status: &self.status,
            deleting: self.deleting,
            cache_id: CACHE_ID,
            owner: OWNER,
            legacy_owner: LEGACY_OWNER,
            policy: self.policy.clone(),
            adopt: self.adopt,
            facts: &self.facts,
            timing: self.timing,
        }
    }

    fn managed_delete(&self) -> bool {
        self.deleting
            && self.policy == Ok(ReconcilePolicy::Manage)
            && self.spec.deletion_policy == DeletionPolicy::Delete
    }

    /// The cache Azure reports is this object's: its owner tag names it, or it has none and the object adopts it.
    fn cache_is_ours(&self) -> bool {
        self.facts.cache.as_ref().is_some_and(|c| match c.tags.get(OWNER_TAG) {
            Some(o) => o == OWNER || o == LEGACY_OWNER,
            None => self.adopt,
        })
    }
}

fn hpc_spec() -> impl Strategy<Value = HpcCacheSpec> {
    let encryption = option::weighted(
        0.8,
        (select(vec![VAULT, VAULT2]), any::<bool>(), any::<bool>()).prop_map(|(vault, rotate, versioned)| Encryption {
            key_vault_id: vault.into(),
            key_name: "k".into(),
            // CEL refuses neither version nor rotation; the machine must not care.
            key_version: (versioned || !rotate).then(|| "0123456789abcdef0123456789abcdef".into()),
            rotate_to_latest_key_version: rotate,
        }),
    );
    (
        any::<bool>(),
        encryption,
        select(vec![KeyAccess::Automatic, KeyAccess::Manual]),
        select(vec![AuthorizationTimeoutPolicy::Fail, AuthorizationTimeoutPolicy::Recreate]),
        0i32..4,
        select(vec![DeletionPolicy::Delete, DeletionPolicy::Orphan]),
        tags(),
    )
        .prop_map(|(ua, encryption, key_access, timeout, max_recreations, deletion_policy, tags)| HpcCacheSpec {
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
            identity: if ua {
                CacheIdentity {
                    type_: IdentityType::UserAssigned,
                    user_assigned_identity_id: Some(format!(
                        "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id"
                    )),
                }
            } else {
                CacheIdentity::default()
            },
            encryption,
            key_access,
            on_authorization_timeout: timeout,
            max_recreations,
            deletion_policy,
            tags,
        })
}

fn hpc_status(generation: Option<i64>) -> impl Strategy<Value = HpcCacheStatus> {
    (
        (phase(), conditions(generation), option::of(Just(CACHE_ID.to_string())), option::of(principal())),
        (option::of(time()), option::of(time()), option::of(time()), option::of(time())),
        (0i32..5, proptest::collection::vec(grant(), 0..3), option::of(select(vec![30, 10, 5]))),
    )
        .prop_map(
            |(
                (phase, conditions, azure_resource_id, principal_id),
                (created_at, authorization_deadline, authorized_at, create_requested_at),
                (recreations, grants, deadline_warning_minutes),
            )| HpcCacheStatus {
                phase,
                observed_generation: None,
                conditions,
                azure_resource_id,
                principal_id,
                tenant_id: None,
                created_at: created_at.map(Time),
                authorization_deadline: authorization_deadline.map(Time),
                active_key_url: None,
                active_key: None,
                mount_addresses: vec![],
                provisioning_state: None,
                health_state: None,
                recreations,
                grants,
                authorized_at: authorized_at.map(Time),
                deadline_warning_minutes,
                create_requested_at: create_requested_at.map(Time),
            },
        )
}

fn cache_facts() -> impl Strategy<Value = CacheFacts> {
    (
        (provisioning(), health(), option::of(Just("Azure says something".to_string())), option::of(principal())),
        (
            option::of(time()),
            option::of(select(vec![KID, KID2, KID_OTHER_VAULT, "not a url", ""])),
            option::of(select(vec![VAULT, VAULT2])),
        ),
        (any::<bool>(), owner_tag(), tags()),
    )
        .prop_map(
            |(
                (provisioning_state, health_state, status_description, principal_id),
                (created_at, key_url, vault),
                (rotation_enabled, owner, mut tags),
            )| {
                if let Some(o) = owner {
                    tags.insert(OWNER_TAG.to_string(), o);
                }
                CacheFacts {
                    id: CACHE_ID.into(),
                    provisioning_state,
                    health_state,
                    status_description,
                    principal_id,
                    tenant_id: Some("tenant".into()),
                    created_at,
                    key_url: key_url.map(str::to_string),
                    key_vault_id: vault.map(str::to_string),
                    rotation_enabled,
                    tags,
                    mount_addresses: vec!["10.0.0.1".into()],
                }
            },
        )
}

fn hpc_case() -> impl Strategy<Value = Case> {
    option::of(0i64..3).prop_flat_map(|generation| {
        (
            hpc_spec(),
            hpc_status(generation),
            any::<bool>(),
            policy(),
            any::<bool>(),
            (time(), option::weighted(0.7, cache_facts()), key_facts(), vault_facts(), identity_facts()),
            timing(),
        )
            .prop_map(
                move |(spec, status, deleting, policy, adopt, (now, cache, key, vault, identity), timing)| Case {
                    spec,
                    generation,
                    status,
                    deleting,
                    policy,
                    adopt,
                    facts: Facts { now, cache, key, vault, identity },
                    timing,
                },
            )
    })
}

proptest! {
    #![proptest_config(config())]

    /// decide is total, and each action it proposes is one its inputs allow.
    #[test]
    fn hpc_cache_decisions_respect_their_inputs(case in hpc_case()) {
        let d = decide(&case.input());
        let cache = case.facts.cache.as_ref();
        let skip = !matches!(case.policy, Ok(ReconcilePolicy::Manage | ReconcilePolicy::DetachOnDelete));

        // Kind of bookkeeping every decision does.
        prop_assert_eq!(d.status.observed_generation, case.generation);
        // A decision never forgets the phase. (Narrowed from "always names one": where nothing happens, e.g. a
        // write skip drops, or a create Azure refused for this generation, the status stays as it was, and a
        // status that never had a phase keeps none.)
        prop_assert!(d.status.phase.is_some() || case.status.phase.is_none(), "the phase was dropped");
        prop_assert!(d.requeue_after > Duration::ZERO, "requeue {:?} would spin", d.requeue_after);
        prop_assert!(d.requeue_after <= case.timing.resync, "requeue {:?} beyond the resync", d.requeue_after);

        // Skip (and an unknown policy) writes nothing to Azure, and records no intent for a write it did not make.
        if skip {
            prop_assert!(!d.action.writes_azure(), "skip wrote: {:?}", d.action);
            prop_assert_eq!(&d.status.grants, &case.status.grants);
        }
        // Manual: the operator never touches the vault.
        if case.spec.key_access == KeyAccess::Manual {
            // (A revoke of a grant the operator itself recorded earlier, under Automatic, stays allowed.)
            prop_assert!(!matches!(d.action, Action::Grant(_) | Action::EnableVaultProtection),
                "Manual mode touched the vault: {:?}", d.action);
        }
        // Someone else's cache (another object's, or made outside the operator and not adopted): nothing is written.
        if cache.is_some() && !case.cache_is_ours() {
            prop_assert!(!d.action.writes_azure(), "wrote to a cache that is not ours: {:?}", d.action);
        }
        // The finalizer goes only with the object, and never while Azure holds something it must still clean up.
        if d.action == Action::RemoveFinalizer {
            prop_assert!(case.deleting);
            if case.managed_delete() && (cache.is_none() || case.cache_is_ours()) {
                prop_assert!(cache.is_none(), "finalizer removed while the cache exists");
                prop_assert!(!d.status.grants.iter().any(|g| g.system_assigned), "a system-assigned grant leaks");
            }
        }
        if case.deleting {
            prop_assert!(
                matches!(d.action, Action::None | Action::Delete | Action::RevokeGrant(_) | Action::RemoveFinalizer),
                "a deleted object only cleans up: {:?}", d.action
            );
        }

        match &d.action {
            Action::Create { key_url } => {
                prop_assert!(cache.is_none(), "create while a cache exists");
                prop_assert!(!case.deleting);
                // Intent first: the create time (the deadline's start) is recorded before the PUT.
                prop_assert!(d.status.create_requested_at.is_some());
                prop_assert_eq!(d.status.azure_resource_id.as_deref(), Some(CACHE_ID));
                match (&case.spec.encryption, &case.facts.key) {
                    (None, _) => prop_assert!(key_url.is_none()),
                    (Some(_), Some(KeyFacts::Valid { kid })) => prop_assert_eq!(key_url.as_deref(), Some(kid.as_str())),
                    (Some(_), other) => prop_assert!(false, "CMK create without a valid key: {:?}", other),
                }
            }
            Action::Delete => {
                let c = cache.expect("delete without a cache");
                prop_assert!(case.cache_is_ours(), "deleting a cache that is not ours");
                prop_assert!(c.provisioning_state != ProvisioningState::Deleting, "deleting twice");
                if !case.managed_delete() {
                    // Outside a delete of the object, only re-creation deletes: a cache that never was healthy,
                    // by the Recreate policy, within its limit.
                    prop_assert!(!case.deleting);
                    prop_assert!(case.status.authorized_at.is_none(), "deleted a cache that was healthy");
                    prop_assert!(!c.is_healthy(), "deleted a cache Azure reports healthy");
                    prop_assert_eq!(case.spec.on_authorization_timeout, AuthorizationTimeoutPolicy::Recreate);
                    // Within the limit, or a re-creation already under way (its DELETE recorded, then refused
                    // or lost), which goes on without being counted again (found by make chaos SEED=2).
                    let under_way = case.status.phase == Some(Phase::Deleting);
                    prop_assert!(
                        d.status.recreations <= case.spec.max_recreations
                            || (under_way && d.status.recreations == case.status.recreations),
                        "a re-creation beyond the limit"
                    );
                    prop_assert_eq!(d.status.phase, Some(Phase::Deleting), "the re-creation is recorded first");
                }
            }
            Action::RevokeGrant(g) => {
                // Only the grant of a system-assigned identity (it dies with its cache), only once no cache is
                // left that could be using it, and only one the operator recorded.
                prop_assert!(g.system_assigned, "revoked a user-assigned identity's grant: {:?}", g);
                prop_assert!(cache.is_none(), "revoked a grant while a cache exists");
                prop_assert!(case.status.grants.contains(g));
            }
            Action::Grant(g) => {
                prop_assert!(!case.deleting);
                let enc = case.spec.encryption.as_ref().expect("a grant without encryption");
                prop_assert_eq!(&g.scope, &enc.key_vault_id);
                prop_assert!(!g.made);
                // Intent first: the record is in the status that is written before the call.
                prop_assert!(d.status.grants.iter().any(|r| r.same_as(g) && !r.made));
                prop_assert_eq!(g.system_assigned, case.spec.identity.type_ == IdentityType::SystemAssigned);
            }
            Action::Update { .. } => {
                let c = cache.expect("update without a cache");
                prop_assert_eq!(&c.provisioning_state, &ProvisioningState::Succeeded);
            }
            Action::EnableVaultProtection => {
                let unprotected = matches!(case.facts.vault, Some(VaultFacts::Usable { protected: false, .. }));
                prop_assert!(unprotected, "protection enabled on a vault not known to lack it");
            }
            Action::None | Action::RemoveFinalizer => {}
        }
    }

    /// A failed action is reported, never retried in a spin, and never forgotten past the resync.
    #[test]
    fn a_failed_action_requeues_within_bounds(
        case in hpc_case(),
        status in option::of(100u16..600),
        retryable in any::<bool>(),
        retry_after in option::of(prop_oneof![Just(0u64), 0u64..100_000, Just(u64::MAX / 4)]),
        which in 0usize..6,
    ) {
        let g = GrantRecord {
            scope: VAULT.into(), principal_id: "sa-principal".into(), tenant_id: None,
            kind: GrantKind::AccessPolicy, system_assigned: true, made: false,
        };
        let action = [
            Action::None, Action::EnableVaultProtection, Action::Grant(g.clone()), Action::Create { key_url: None },
            Action::Delete, Action::RevokeGrant(g),
        ][which].clone();
        let error = ActionError {
            status, code: "Garbage\u{0}Code".into(), message: "\u{FFFD}".repeat(3), retryable,
            retry_after: retry_after.map(Duration::from_millis),
        };
        let d = action_failed(&case.status, case.generation, &action, &error, case.facts.now, case.timing);
        prop_assert_eq!(d.action, Action::None);
        prop_assert!(d.requeue_after > Duration::ZERO, "requeue {:?} would spin", d.requeue_after);
        prop_assert!(d.requeue_after <= case.timing.resync, "requeue {:?} beyond the resync", d.requeue_after);
        if let Action::Grant(g) = &action {
            prop_assert!(!d.status.grants.iter().any(|r| r.same_as(g) && !r.made), "a refused grant still counts");
        }
    }
}

// ------------------------------------------------------------------------------------------------ AmlFilesystem

#[derive(Debug, Clone)]
struct AmlCase {
    spec: AmlFilesystemSpec,
    generation: Option<i64>,
    status: AmlFilesystemStatus,
    deleting: bool,
    policy: Result<ReconcilePolicy, String>,
    adopt: bool,
    facts: AmlFacts,
    timing: Timing,
}

impl AmlCase {
    fn input(&self) -> AmlInput<'_> {
        AmlInput {
            spec: &self.spec,
            generation: self.generation,
            status: &self.status,
            deleting: self.deleting,
            resource_id: AML_ID,
            owner: OWNER,
            policy: self.policy.clone(),
            adopt: self.adopt,
            facts: &self.facts,
            timing: self.timing,
        }
    }

    fn fs_is_ours(&self) -> bool {
        self.facts.filesystem.as_ref().is_some_and(|f| match f.tags.get(OWNER_TAG) {
            Some(o) => o == OWNER,
            None => self.adopt,
        })
    }
}

fn aml_spec() -> impl Strategy<Value = AmlFilesystemSpec> {
    (
        option::weighted(0.8, select(vec![VAULT, VAULT2])),
        select(vec![KeyAccess::Automatic, KeyAccess::Manual]),
        option::of(select(vec![KeyAccess::Automatic, KeyAccess::Manual])),
        select(vec![DeletionPolicy::Delete, DeletionPolicy::Orphan]),
        tags(),
    )
        .prop_map(|(vault, key_access, blob, deletion_policy, tags)| AmlFilesystemSpec {
            azure: AzureLocation {
                subscription_id: SUB.into(),
                resource_group: "rg".into(),
                location: "eastus".into(),
                name: None,
            },
            sku: "AMLFS-Durable-Premium-250".into(),
            storage_capacity_tib: 8,
            subnet_id: format!(
                "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v/subnets/s"
            ),
            zones: vec!["1".into()],
            maintenance_window: MaintenanceWindow { day_of_week: "Sunday".into(), time_of_day_utc: "02:00".into() },
            identity: Some(AmlIdentity { user_assigned_identity_id: "/x/ua".into() }),
            encryption: vault.map(|v| AmlEncryption {
                key_vault_id: v.into(),
                key_name: "k".into(),
                key_version: "0123456789abcdef0123456789abcdef".into(),
            }),
            key_access,
            blob_integration: blob.map(|grant_blob_access| BlobIntegration {
                storage_account_id: ACCOUNT.into(),
                container: "data".into(),
                logging_container: "logs".into(),
                import_prefix: None,
                grant_blob_access,
            }),
            root_squash: None,
            deletion_policy,
            tags,
        })
}

fn fs_facts() -> impl Strategy<Value = FilesystemFacts> {
    (
        provisioning(),
        option::of(select(vec!["Available", "Degraded", "Transitioning", "Maintenance", "Sleeping", ""])),
        option::of(select(vec![KID, KID2, KID_OTHER_VAULT, "garbage"])),
        owner_tag(),
        tags(),
    )
        .prop_map(|(provisioning_state, health, key_url, owner, mut tags)| {
            if let Some(o) = owner {
                tags.insert(OWNER_TAG.to_string(), o);
            }
            FilesystemFacts {
                id: AML_ID.into(),
                provisioning_state,
                health_state: health.map(str::to_string),
                status_description: None,
                key_url: key_url.map(str::to_string),
                key_vault_id: Some(VAULT.into()),
                tags,
                mgs_address: Some("10.0.0.4".into()),
                mount_command: None,
                lustre_version: None,
            }
        })
}

fn blob_facts() -> impl Strategy<Value = Option<BlobAccessFacts>> {
    option::of((principal(), any::<bool>(), any::<bool>()).prop_map(|(p, a, b)| BlobAccessFacts {
        provider_principal_id: p,
        storage_account_contributor: a,
        storage_blob_data_contributor: b,
    }))
}

fn aml_case() -> impl Strategy<Value = AmlCase> {
    option::of(0i64..3).prop_flat_map(move |generation| {
        let status = (phase(), conditions(generation), proptest::collection::vec(grant(), 0..3), option::of(time()))
            .prop_map(|(phase, conditions, grants, create_requested_at)| AmlFilesystemStatus {
                phase,
                conditions,
                grants,
                create_requested_at: create_requested_at.map(Time),
                ..Default::default()
            });
        (
            aml_spec(),
            status,
            any::<bool>(),
            policy(),
            any::<bool>(),
            (time(), option::weighted(0.6, fs_facts()), key_facts(), vault_facts(), identity_facts(), blob_facts()),
            timing(),
        )
            .prop_map(
                move |(
                    spec,
                    status,
                    deleting,
                    policy,
                    adopt,
                    (now, filesystem, key, vault, identity, blob),
                    timing,
                )| {
                    AmlCase {
                        spec,
                        generation,
                        status,
                        deleting,
                        policy,
                        adopt,
                        facts: AmlFacts { now, filesystem, key, vault, identity, blob },
                        timing,
                    }
                },
            )
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn aml_filesystem_decisions_respect_their_inputs(case in aml_case()) {
        let d = decide_amlfs(&case.input());
        let fs = case.facts.filesystem.as_ref();
        let skip = !matches!(case.policy, Ok(ReconcilePolicy::Manage | ReconcilePolicy::DetachOnDelete));

        prop_assert_eq!(d.status.observed_generation, case.generation);
        prop_assert!(d.requeue_after > Duration::ZERO, "requeue {:?} would spin", d.requeue_after);
        prop_assert!(d.requeue_after <= case.timing.resync, "requeue {:?} beyond the resync", d.requeue_after);
        if skip {
            prop_assert!(!d.action.writes_azure(), "skip wrote: {:?}", d.action);
            prop_assert_eq!(&d.status.grants, &case.status.grants);
        }
        if fs.is_some() && !case.fs_is_ours() {
            prop_assert!(!d.action.writes_azure(), "wrote to a file system that is not ours: {:?}", d.action);
        }
        if d.action == Action::RemoveFinalizer {
            prop_assert!(case.deleting);
        }
        if case.deleting {
            prop_assert!(
                matches!(d.action, Action::None | Action::Delete | Action::RevokeGrant(_) | Action::RemoveFinalizer),
                "a deleted object only cleans up: {:?}", d.action
            );
        }
        match &d.action {
            Action::Create { key_url } => {
                prop_assert!(fs.is_none(), "create while a file system exists");
                prop_assert!(d.status.create_requested_at.is_some());
                prop_assert_eq!(key_url.is_some(), case.spec.encryption.is_some());
            }
            Action::Delete => {
                // No window and no re-creation: a file system is deleted only with its object.
                prop_assert!(case.deleting && case.policy == Ok(ReconcilePolicy::Manage));
                prop_assert_eq!(case.spec.deletion_policy, DeletionPolicy::Delete);
                prop_assert!(case.fs_is_ours());
                prop_assert!(fs.is_some_and(|f| f.provisioning_state != ProvisioningState::Deleting));
            }
            Action::RevokeGrant(g) => {
                prop_assert!(case.deleting && fs.is_none(), "revoked a grant the file system may still use");
                prop_assert!(case.status.grants.contains(g) && g.made);
            }
            Action::Grant(g) => {
                prop_assert!(!case.deleting);
                prop_assert!(d.status.grants.iter().any(|r| r.same_as(g) && !r.made), "intent recorded first");
                if g.kind.is_key_access() {
                    prop_assert_eq!(case.spec.key_access, KeyAccess::Automatic, "Manual: a person grants the key");
                } else {
                    let blob = case.spec.blob_integration.as_ref().expect("a storage grant without blob integration");
                    prop_assert_eq!(blob.grant_blob_access, KeyAccess::Automatic);
                }
            }
            Action::EnableVaultProtection => {
                prop_assert_eq!(case.spec.key_access, KeyAccess::Automatic);
            }
            Action::Update { .. } => {
                prop_assert!(fs.is_some_and(|f| f.provisioning_state == ProvisioningState::Succeeded));
            }
            Action::None | Action::RemoveFinalizer => {}
        }
    }
}
