//! Observe: the Azure reads for one object, and nothing else (what they mean is decided in
//! [`facts`](super::facts)). Reads are shared and budgeted through [`RecentReads`].

use hpcc_api::v1alpha1::{Encryption, HpcCache};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hpcc_azure::{
    Access, Azure, AzureError, Cache, Caller, Dated, KEY_VAULT_CRYPTO_SERVICE_ENCRYPTION_USER, ResourceId, Urgency,
    Vault, with_caller,
};
use jiff::Timestamp;
use url::Url;

use super::changes::AzureChanges;
use super::observation::{IdentityRead, KeyRead, Observation, Referenced, References, VaultRead};
use super::reads::{RecentReads, SharedRead, by_id};

/// The ARM id of the cache an object manages.
pub fn cache_id(obj: &HpcCache) -> ResourceId {
    let a = &obj.spec.azure;
    ResourceId::cache(&a.subscription_id, &a.resource_group, obj.azure_name())
}

/// Reads the cache and what the spec references. `allowed_vault_scopes`: the namespace's
/// [`hpcc_core::ALLOWED_VAULT_SCOPES_ANNOTATION`], if any.
pub async fn observe(
    azure: &Azure,
    reads: &RecentReads,
    changes: &AzureChanges,
    obj: &HpcCache,
    allowed_vault_scopes: Option<&str>,
) -> Result<Observation, AzureError> {
    let id = cache_id(obj);
    changes.belongs(&id, obj);
    let got = read_cache(azure, reads, changes, &id).await?;
    let now = got.date.unwrap_or_else(Timestamp::now);
    let mut observation = Observation { now, cache: got.value, referenced: None };
    if obj.metadata.deletion_timestamp.is_some() {
        return Ok(observation);
    }
    let Some(refs) = References::of(&obj.spec, allowed_vault_scopes, observation.cache.as_ref()) else {
        return Ok(observation);
    };
    let referenced = referenced(azure, reads, refs.cache_key(), &refs).await?;
    if let (Some(VaultRead::Found { vault, .. }), Some(enc)) = (&referenced.vault, &refs.encryption)
        && vault.is_protected()
    {
        reads.mark_vault_protected(&enc.key_vault_id);
    }
    observation.referenced = Some(referenced);
    Ok(observation)
}

/// The cache as Azure reports it: from its resource group's recent list, or a GET when the list lacks it.
async fn read_cache(
    azure: &Azure,
    reads: &RecentReads,
    changes: &AzureChanges,
    id: &ResourceId,
) -> Result<Dated<Option<Cache>>, AzureError> {
    // The first look of an object whose cache was never acted on takes its place in the line of new caches (a
    // write token prepaid for its create, behind the writes of caches on their way: see [`Azure::start_turn`]), then
    // its GET waits behind the reads of those caches.
    let first_look = hpcc_azure::current_caller().filter(|c| c.urgency == Urgency::Normal && !reads.acted_on(id));
    let list = match reads.cache_list(id) {
        Some(list) => list,
        // A create waiting for its write turn was decided on a GET's "absent": that stands until its turn.
        None if reads.absent(id) => return Ok(Dated { value: None, date: None, retry_after: None }),
        None => {
            // Back before its place comes (others went ahead): back to its place, without reading the list.
            if first_look.is_some() {
                azure.start_waiting(id.subscription())?;
            }
            if let Some(after) = reads.list_spacing(id) {
                return Err(AzureError::Deferred { after, access: Access::Read });
            }
            let read = async {
                let started = Instant::now();
                let list = Arc::new(by_id(azure.list_caches(id.subscription(), id.resource_group()).await?));
                changes.changed(&reads.remember_cache_list(id, started, list.clone()));
                Ok(list)
            };
            shared(reads, &RecentReads::list_read(id), || reads.cache_list(id), read).await?
        }
    };
    match list.value.get(&id.to_string().to_ascii_lowercase()) {
        Some(c) => Ok(Dated { value: Some(c.clone()), date: list.date, retry_after: list.retry_after }),
        None if reads.absent(id) => Ok(Dated { value: None, date: list.date, retry_after: list.retry_after }),
        // Lists may lag behind a create; only a GET says a cache does not exist.
        None => {
            if first_look.is_some() {
                azure.start_turn(id.subscription())?;
            }
            let started = Instant::now();
            let get = azure.get_cache(id);
            let got = match first_look {
                Some(c) => with_caller(Caller { urgency: Urgency::Starting, ..c }, get).await?,
                None => get.await?,
            };
            if got.value.is_none() {
                reads.remember_absent(id, started);
            }
            Ok(got)
        }
    }
}

/// What the spec references (`key`: see [`RecentReads::referenced`]), as recently read or read now.
pub(super) async fn referenced(
    azure: &Azure,
    reads: &RecentReads,
    key: String,
    refs: &References,
) -> Result<Referenced, AzureError> {
    let read = async {
        let r = read_referenced(azure, refs).await?;
        reads.remember_referenced(key.clone(), r.clone());
        Ok(r)
    };
    shared(reads, &RecentReads::referenced_read(&key), || reads.referenced(&key), read).await
}

/// A read many reconciles want at once: the answer `known` to be recent enough, or else one reconcile makes the
/// `read` while the others wait for it, also when the read budget defers it (they then book no read of their own).
async fn shared<T>(
    reads: &RecentReads,
    shared_read: &SharedRead,
    known: impl Fn() -> Option<T>,
    read: impl Future<Output = Result<T, AzureError>>,
) -> Result<T, AzureError> {
    if let Some(answer) = known() {
        return Ok(answer);
    }
    let lock = reads.read_lock(shared_read);
    // Waiting holds a reconcile slot: a read that takes long (its later pages wait for tokens) sends the others
    // away for a moment instead of holding every slot.
    let Ok(_reading) = tokio::time::timeout(SHARED_READ_WAIT, lock.lock()).await else {
        return Err(AzureError::Deferred { after: SHARED_READ_WAIT, access: Access::Read });
    };
    // Another reconcile may have read it while this one waited.
    if let Some(answer) = known() {
        return Ok(answer);
    }
    if let Some(after) = reads.turn(shared_read) {
        return Err(AzureError::Deferred { after, access: Access::Read });
    }
    let outcome = async {
        match read.await {
            Err(AzureError::Deferred { after, access }) => {
                reads.deferred(shared_read, after);
                Err(AzureError::Deferred { after, access })
            }
            done => {
                reads.read_done(shared_read);
                done
            }
        }
    };
    // One read answers many objects: it goes ahead of single objects' reads, as urgent work does (at 10,000
    // caches, thousands of first GETs otherwise kept every Creating cache's list read minutes away). Steady-state
    // work stays routine: it leaves the headroom alone.
    match hpcc_azure::current_caller() {
        Some(c) if c.urgency == Urgency::Normal => with_caller(Caller { urgency: Urgency::Urgent, ..c }, outcome).await,
        _ => outcome.await,
    }
}

/// How long a reconcile waits for another's shared read before it comes back later.
const SHARED_READ_WAIT: Duration = Duration::from_secs(2);

/// Reads the vault, the key and the user-assigned identity the spec references. A vault the namespace may not
/// use is never read, not even to look at it.
async fn read_referenced(azure: &Azure, refs: &References) -> Result<Referenced, AzureError> {
    let vault = match &refs.encryption {
        None => None,
        Some(enc) => Some(read_vault(azure, refs, enc).await?),
    };
    let identity = match &refs.user_assigned_identity_id {
        None => None,
        Some(id) => Some(read_identity(azure, id, vault.as_ref()).await?),
    };
    Ok(Referenced { vault, identity })
}

async fn read_vault(azure: &Azure, refs: &References, enc: &Encryption) -> Result<VaultRead, AzureError> {
    let allowed =
        hpcc_core::vault_allowed(&enc.key_vault_id, &refs.subscription_id, refs.allowed_vault_scopes.as_deref());
    if let Err(message) = allowed {
        return Ok(VaultRead::NotAllowed(message));
    }
    let id = match ResourceId::parse(&enc.key_vault_id) {
        Ok(id) => id,
        Err(e) => return Ok(VaultRead::BadId(e.to_string())),
    };
    match azure.get_vault(&id).await {
        Ok(Dated { value: None, .. }) => Ok(VaultRead::NotFound),
        Ok(Dated { value: Some(vault), .. }) => {
            let key = read_key(azure, &vault, enc).await?;
            Ok(VaultRead::Found { vault: Box::new(vault), key })
        }
        Err(e) if e.status() == Some(403) => Ok(VaultRead::AccessDenied(e.to_string())),
        Err(e) => Err(e),
    }
}

async fn read_key(azure: &Azure, vault: &Vault, enc: &Encryption) -> Result<KeyRead, AzureError> {
    let Some(uri) = vault.properties.vault_uri.as_deref().and_then(|u| Url::parse(u).ok()) else {
        return Ok(KeyRead::NoVaultUri);
    };
    let vault_uri = uri.to_string();
    match azure.get_key(&uri, &enc.key_name, enc.key_version.as_deref()).await {
        Ok(None) => Ok(KeyRead::NotFound { vault_uri }),
        Ok(Some(bundle)) => Ok(KeyRead::Found(Box::new(bundle))),
        Err(e) if matches!(e.status(), Some(401 | 403)) => {
            Ok(KeyRead::AccessDenied { vault_uri, error: e.to_string() })
        }
        Err(e) => Err(e),
    }
}

async fn read_identity(azure: &Azure, id: &str, vault: Option<&VaultRead>) -> Result<IdentityRead, AzureError> {
    let rid = match ResourceId::parse(id) {
        Ok(rid) => rid,
        Err(e) => return Ok(IdentityRead::BadId(e.to_string())),
    };
    let Some(identity) = azure.get_user_assigned_identity(&rid).await? else {
        return Ok(IdentityRead::NotFound);
    };
    // On an RBAC vault, whether it already holds the role: one roleAssignments listing (an access-policy vault
    // lists its policies itself, which `facts` reads).
    let rbac_vault = match vault {
        Some(VaultRead::Found { vault, .. }) if vault.properties.enable_rbac_authorization == Some(true) => {
            vault.id.as_deref().and_then(|v| ResourceId::parse(v).ok())
        }
        _ => None,
    };
    let role_assigned = match rbac_vault {
        Some(vault_id) => {
            let principal = identity.properties.principal_id.clone().unwrap_or_default();
            Some(azure.has_role_assignment(&vault_id, &principal, KEY_VAULT_CRYPTO_SERVICE_ENCRYPTION_USER).await?)
        }
        None => None,
    };
    Ok(IdentityRead::Found { identity, role_assigned })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::reads::Freshness;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn caller(holder: &str, urgency: Urgency) -> Caller {
        Caller { holder: holder.to_string(), urgency }
    }

    #[tokio::test]
    async fn a_shared_read_is_made_once_ahead_of_single_reads_and_its_waiters_book_nothing() {
        let reads = RecentReads::new(Freshness {
            facts: Duration::from_secs(60),
            cache_list: Duration::from_secs(7),
            routine: Duration::from_secs(300),
        });
        let read = RecentReads::referenced_read("vault+key");
        let sent = AtomicUsize::new(0);
        let deferred = |r: &Result<u32, AzureError>| match r {
            Err(AzureError::Deferred { after, .. }) => Some(*after),
            _ => None,
        };

        // A's read runs as urgent work, and the budget defers it 3 s.
        let a = shared(&reads, &read, || None, async {
            sent.fetch_add(1, Ordering::SeqCst);
            assert_eq!(hpcc_azure::current_caller().map(|c| c.urgency), Some(Urgency::Urgent));
            Err(AzureError::Deferred { after: Duration::from_secs(3), access: Access::Read })
        });
        assert_eq!(deferred(&with_caller(caller("A", Urgency::Normal), a).await), Some(Duration::from_secs(3)));

        // B wants the same read: it waits for A's turn without making (or booking) a read of its own.
        let b = shared(&reads, &read, || None, async {
            sent.fetch_add(1, Ordering::SeqCst);
            Ok(1)
        });
        let waited = deferred(&with_caller(caller("B", Urgency::Normal), b).await).expect("B is deferred");
        assert!(waited > Duration::from_secs(3), "{waited:?}");
        assert_eq!(sent.load(Ordering::SeqCst), 1);

        // A comes back for its turn as steady-state work: that stays routine, and the turn ends with the read.
        let again = shared(&reads, &read, || None, async {
            sent.fetch_add(1, Ordering::SeqCst);
            assert_eq!(hpcc_azure::current_caller().map(|c| c.urgency), Some(Urgency::Routine));
            Ok(2)
        });
        assert_eq!(with_caller(caller("A", Urgency::Routine), again).await.ok(), Some(2));
        assert_eq!(with_caller(caller("B", Urgency::Normal), async { reads.turn(&read) }).await, None);
        assert_eq!(sent.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn new_caches_take_their_first_look_in_the_line_paced_to_the_write_budget() {
        use hpcc_test_support::sim::{SUB, seed};
        let config = hpcc_sim::SimConfig { seed: Some(seed()), ..Default::default() };
        let sim = hpcc_sim::Simulator::start(config).await.unwrap();
        let env: std::collections::HashMap<String, String> = sim.env().into_iter().collect();
        let mut cfg = hpcc_azure::AzureConfig::from_vars(|k| env.get(k).cloned()).unwrap();
        // One write each two seconds, one at once: one new cache now, then one each two seconds.
        (cfg.writes_per_second, cfg.write_burst) = (0.5, 1);
        let azure = Azure::new(cfg, None).await.unwrap();
        let reads = RecentReads::new(Freshness {
            facts: Duration::from_secs(60),
            cache_list: Duration::ZERO,
            routine: Duration::from_secs(300),
        });
        let changes = AzureChanges::default();
        let cache = |name: &str| ResourceId::cache(SUB, "rg", name);
        let (azure, reads, changes) = (&azure, &reads, &changes);
        let look = |holder: &'static str, id: ResourceId| {
            with_caller(caller(holder, Urgency::Normal), async move { read_cache(azure, reads, changes, &id).await })
        };
        let gets = || sim.requests().iter().filter(|r| r.method == "GET" && r.path.contains("/caches/")).count();
        // Lists are never fresh here, and the next may begin only some time after the last (`list_spacing`).
        let spaced = || tokio::time::sleep(reads.list_spacing(&cache("any")).unwrap_or_default());

        // The first new cache looks at once: one list, one GET that finds it absent.
        assert!(look("a", cache("a")).await.unwrap().value.is_none());
        assert_eq!(gets(), 1);
        // The next waits for its place, paced to the writes, without a read booked or sent.
        spaced().await;
        match look("b", cache("b")).await {
            Err(AzureError::Deferred { after, access: Access::Write }) => {
                assert!(after > Duration::ZERO && after <= Duration::from_secs(2), "{after:?}")
            }
            other => panic!("b starts later, not {other:?}"),
        }
        assert_eq!(gets(), 1);
        // Back before its place comes, it goes back to it without reading anything.
        let lists = || sim.requests().iter().filter(|r| r.method == "GET" && r.path.ends_with("/caches")).count();
        spaced().await;
        let listed = lists();
        assert!(matches!(look("b", cache("b")).await, Err(AzureError::Deferred { access: Access::Write, .. })));
        assert_eq!((lists(), gets()), (listed, 1));
        // The write of "a" (its create; a DELETE here, as simple) spends the token its start prepaid, while
        // another object's write waits for the bucket.
        let write = |holder: &'static str, id: ResourceId| {
            with_caller(caller(holder, Urgency::Normal), async move { azure.delete_cache(&id).await })
        };
        assert!(write("a", cache("a")).await.is_ok());
        assert!(matches!(write("z", cache("z")).await, Err(AzureError::Deferred { access: Access::Write, .. })));
        // A cache acted on (its create sent) is no new cache: its look is not held back.
        reads.forget_cache(&cache("c"));
        spaced().await;
        assert!(look("c", cache("c")).await.unwrap().value.is_none());
        assert_eq!(gets(), 2);
        sim.shutdown().await;
    }
}
