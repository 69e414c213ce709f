//! Table tests of the AmlFilesystem machine: grants before the one create, Manual modes, key change, deletion.

use super::*;
use hpcc_api::v1alpha1::{AmlEncryption, AmlIdentity, AzureLocation, BlobIntegration, MaintenanceWindow};

const SUB: &str = "11111111-2222-3333-4444-555555555555";
const VAULT: &str =
    "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv";
const ACCOUNT: &str = "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/data";
const KID: &str = "https://kv.vault.azure.net/keys/k/0123456789abcdef0123456789abcdef";
const KID2: &str = "https://kv.vault.azure.net/keys/k/fedcba9876543210fedcba9876543210";
const OWNER: &str = "cluster-a/research/lustre";
const ID: &str = "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg/providers/Microsoft.StorageCache/amlFilesystems/l";

fn spec() -> AmlFilesystemSpec {
    AmlFilesystemSpec {
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
        encryption: Some(AmlEncryption {
            key_vault_id: VAULT.into(),
            key_name: "k".into(),
            key_version: "0123456789abcdef0123456789abcdef".into(),
        }),
        key_access: KeyAccess::Automatic,
        blob_integration: None,
        root_squash: None,
        deletion_policy: DeletionPolicy::Delete,
        tags: Default::default(),
    }
}

fn facts(has_key_access: bool) -> AmlFacts {
    AmlFacts {
        now: "2026-11-29T10:00:00Z".parse().unwrap(),
        filesystem: None,
        key: Some(KeyFacts::Valid { kid: KID.into() }),
        vault: Some(VaultFacts::Usable { protected: true, rbac: false }),
        identity: Some(IdentityFacts::Usable {
            principal_id: "ua".into(),
            tenant_id: None,
            has_key_access: Some(has_key_access),
        }),
        blob: None,
    }
}

fn filesystem(state: &str, health: &str, key_url: &str) -> FilesystemFacts {
    FilesystemFacts {
        id: ID.into(),
        provisioning_state: P::parse(state),
        health_state: Some(health.into()),
        status_description: None,
        key_url: Some(key_url.into()),
        key_vault_id: Some(VAULT.into()),
        tags: [(OWNER_TAG.to_string(), OWNER.to_string())].into(),
        mgs_address: Some("10.0.0.4".into()),
        mount_command: Some("mount -t lustre 10.0.0.4@tcp:/lustrefs /mnt".into()),
        lustre_version: Some("2.15".into()),
    }
}

struct Case {
    spec: AmlFilesystemSpec,
    status: AmlFilesystemStatus,
    facts: AmlFacts,
    deleting: bool,
}

impl Case {
    fn new(has_key_access: bool) -> Self {
        Self { spec: spec(), status: Default::default(), facts: facts(has_key_access), deleting: false }
    }
    fn run(&self) -> Decision<AmlFilesystemStatus> {
        decide_amlfs(&AmlInput {
            spec: &self.spec,
            generation: Some(1),
            status: &self.status,
            deleting: self.deleting,
            resource_id: ID,
            owner: OWNER,
            policy: Ok(ReconcilePolicy::Manage),
            adopt: false,
            facts: &self.facts,
            timing: Timing::default(),
        })
    }
    /// Runs, then applies the decision as the operator would (success of the action).
    fn step(&mut self) -> Action {
        let d = self.run();
        self.status = d.status;
        crate::action_succeeded(&mut self.status, &d.action);
        d.action
    }
}

fn cond<'a>(d: &'a Decision<AmlFilesystemStatus>, t: &str) -> (&'a str, &'a str, &'a str) {
    let c = d.status.conditions.iter().find(|c| c.type_ == t).unwrap_or_else(|| panic!("no {t}"));
    (c.status.as_str(), c.reason.as_str(), c.message.as_str())
}

#[test]
fn automatic_grants_the_identity_before_the_one_create() {
    let mut c = Case::new(false);
    let grant = c.step();
    assert!(
        matches!(&grant, Action::Grant(g) if g.principal_id == "ua" && g.scope == VAULT && g.kind == GrantKind::AccessPolicy)
    );
    assert_eq!(c.status.phase, Some(Phase::Authorizing));
    assert_eq!(c.step(), Action::Create { key_url: Some(KID.into()) }, "then the create, with the key");
    assert!(c.status.create_requested_at.is_some(), "intent recorded before the PUT");
}

#[test]
fn an_identity_with_access_is_created_at_once_and_ready_when_available() {
    let mut c = Case::new(true);
    assert_eq!(c.step(), Action::Create { key_url: Some(KID.into()) });
    c.facts.filesystem = Some(filesystem("Creating", "Transitioning", KID));
    assert_eq!(c.step(), Action::None);
    assert_eq!(c.status.phase, Some(Phase::Creating));
    c.facts.filesystem = Some(filesystem("Succeeded", "Available", KID));
    let d = c.run();
    assert_eq!(d.action, Action::None);
    assert_eq!(d.status.phase, Some(Phase::Ready));
    assert_eq!(cond(&d, "Ready").0, "True");
    assert_eq!(d.status.mgs_address.as_deref(), Some("10.0.0.4"));
    assert!(d.status.mount_command.as_deref().unwrap().starts_with("mount -t lustre"));
    assert_eq!(d.status.active_key.as_deref(), Some("k/0123456789abcdef0123456789abcdef"));
}

#[test]
fn manual_creates_nothing_and_names_principal_rights_and_vault() {
    let mut c = Case::new(false);
    c.spec.key_access = KeyAccess::Manual;
    let d = c.run();
    assert_eq!(d.action, Action::None);
    let (status, reason, message) = cond(&d, "KeyAuthorized");
    assert_eq!((status, reason), ("False", "AwaitingManualGrant"));
    assert!(message.contains("principal ua") && message.contains("wrapKey") && message.contains(VAULT), "{message}");
    c.facts.vault = Some(VaultFacts::Usable { protected: true, rbac: true });
    assert!(cond(&c.run(), "KeyAuthorized").2.contains("Key Vault Crypto Service Encryption User"));
}

#[test]
fn blob_integration_gets_both_storage_roles_before_the_create() {
    let mut c = Case::new(true);
    c.spec.blob_integration = Some(BlobIntegration {
        storage_account_id: ACCOUNT.into(),
        container: "data".into(),
        logging_container: "logs".into(),
        import_prefix: None,
        grant_blob_access: KeyAccess::Automatic,
    });
    assert_eq!(c.run().action, Action::None, "the role assignments are read first");
    c.facts.blob = Some(BlobAccessFacts {
        provider_principal_id: "rp".into(),
        storage_account_contributor: false,
        storage_blob_data_contributor: false,
    });
    let first = c.step();
    assert!(
        matches!(&first, Action::Grant(g) if g.kind == GrantKind::StorageAccountContributor && g.scope == ACCOUNT && g.principal_id == "rp")
    );
    let second = c.step();
    assert!(matches!(&second, Action::Grant(g) if g.kind == GrantKind::StorageBlobDataContributor));
    assert!(matches!(c.step(), Action::Create { .. }), "both roles made: the create");
    assert_eq!(c.status.grants.iter().filter(|g| g.made).count(), 2);
}

#[test]
fn a_key_version_change_is_one_patch() {
    let mut c = Case::new(true);
    c.facts.filesystem = Some(filesystem("Succeeded", "Available", KID));
    assert_eq!(c.step(), Action::None);
    c.facts.key = Some(KeyFacts::Valid { kid: KID2.into() });
    assert_eq!(c.step(), Action::Update { key_url: Some(KID2.into()) });
    c.facts.filesystem = Some(filesystem("Succeeded", "Available", KID2));
    assert_eq!(c.step(), Action::None, "in sync after the one PATCH");
}

#[test]
fn delete_removes_the_filesystem_then_the_grants_it_made_and_orphan_keeps_both() {
    let mut c = Case::new(false);
    c.step(); // the grant
    c.facts.filesystem = Some(filesystem("Succeeded", "Available", KID));
    c.step();
    c.deleting = true;
    assert_eq!(c.step(), Action::Delete);
    c.facts.filesystem = None;
    assert!(matches!(c.step(), Action::RevokeGrant(g) if g.principal_id == "ua"));
    assert_eq!(c.step(), Action::RemoveFinalizer);
    let mut o = Case::new(true);
    o.spec.deletion_policy = DeletionPolicy::Orphan;
    o.facts.filesystem = Some(filesystem("Succeeded", "Available", KID));
    o.deleting = true;
    assert_eq!(o.run().action, Action::RemoveFinalizer);
}

#[test]
fn a_filesystem_made_elsewhere_is_left_alone() {
    let mut c = Case::new(true);
    c.facts.filesystem =
        Some(FilesystemFacts { tags: Default::default(), ..filesystem("Succeeded", "Available", KID) });
    let d = c.run();
    assert_eq!(d.action, Action::None);
    assert_eq!(cond(&d, "Stalled").1, "CacheExistsNotOwned");
    c.deleting = true;
    assert_eq!(c.run().action, Action::RemoveFinalizer);
}

#[test]
fn a_create_refused_while_grants_propagate_is_retried() {
    let mut status = AmlFilesystemStatus::default();
    let now: Timestamp = "2026-11-29T10:00:00Z".parse().unwrap();
    status.create_requested_at = Some(Time(now));
    status.grants = vec![GrantRecord {
        scope: VAULT.into(),
        principal_id: "ua".into(),
        tenant_id: None,
        kind: GrantKind::AccessPolicy,
        system_assigned: false,
        made: true,
    }];
    let refused = ActionError {
        status: Some(400),
        code: "BadRequest".into(),
        message: "no key access".into(),
        retryable: false,
        retry_after: None,
    };
    let create = Action::Create { key_url: Some(KID.into()) };
    assert!(create_refused_while_grants_propagate(&status, &create, &refused, now + SignedDuration::from_mins(3)));
    assert!(!create_refused_while_grants_propagate(&status, &create, &refused, now + SignedDuration::from_mins(30)));
    status.grants.clear();
    assert!(!create_refused_while_grants_propagate(&status, &create, &refused, now), "no grant of ours: final");
}
