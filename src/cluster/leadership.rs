//! Leader election on `<prefix>leader`: a put-if-absent transaction of this instance's name on
//! a key bound to its session lease. The key's create revision names the term; it vanishes with
//! the lease (instance gone, or cut from etcd for `lease_ttl`), and the watch then lets every
//! instance campaign again. This is what etcd's election API does underneath (a leased key,
//! lowest create revision wins); done directly it needs no blocking campaign call to cancel, and
//! the fence can compare on the exact key and lease.

use super::connect::call;
use super::{Core, Term};
use crate::control::leadership::{Fence, FenceCheck, Leadership};
use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp};
use std::sync::Arc;
use tokio::sync::watch;
use tokio::time::Instant;

/// Takes the leader key when it is free; adopts or drops the term after the leader key changed.
pub(super) async fn campaign(core: &Core, client: &mut Client, lease: i64) -> Result<(), String> {
    let current = core
        .mirror
        .lock()
        .expect("cluster mirror lock")
        .leader
        .clone();
    let term = match current {
        Some(l) if l.lease == lease => Some(Term {
            create_revision: l.create_revision,
            lease,
        }),
        Some(_) => None,
        None => {
            let key = core.keys.leader();
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(
                    key,
                    core.cfg.name.clone(),
                    Some(PutOptions::new().with_lease(lease)),
                )]);
            let resp = call("campaign", client.txn(txn)).await?;
            // The key was created by this transaction: its create revision is the txn's.
            resp.succeeded()
                .then(|| resp.header().map(|h| h.revision()))
                .flatten()
                .map(|create_revision| Term {
                    create_revision,
                    lease,
                })
        }
    };
    let was = core.with_live(|l| match l {
        Some(l) => std::mem::replace(&mut l.term, term),
        None => None,
    });
    if was != term {
        match term {
            Some(t) => tracing::info!(revision = t.create_revision, "cluster: this instance leads"),
            None if was.is_some() => tracing::warn!("cluster: this instance no longer leads"),
            None => {}
        }
    }
    Ok(())
}

pub(super) struct EtcdLeadership(pub Arc<Core>);

impl Leadership for EtcdLeadership {
    fn leading(&self) -> watch::Receiver<bool> {
        self.0.leading.subscribe()
    }

    fn fence(&self) -> Arc<dyn Fence> {
        let term = self.0.live().and_then(|l| l.term);
        Arc::new(EtcdFence {
            core: self.0.clone(),
            term,
        })
    }
}

/// Proves the term a release run started under still holds: locally first (the session is the
/// same and its lease cannot have lapsed), then with a transaction that succeeds only if the
/// leader key is still the one this term created, on this term's lease.
struct EtcdFence {
    core: Arc<Core>,
    term: Option<Term>,
}

impl EtcdFence {
    async fn check(&self) -> bool {
        let Some(term) = self.term else { return false };
        let Some(live) = self.core.live() else {
            return false;
        };
        if live.term != Some(term) || live.renewed_at + self.core.ttl() <= Instant::now() {
            return false;
        }
        let key = self.core.keys.leader();
        let txn = Txn::new().when([
            Compare::create_revision(key.clone(), CompareOp::Equal, term.create_revision),
            Compare::lease(key, CompareOp::Equal, term.lease),
        ]);
        let mut client = live.client;
        match call("fence", client.txn(txn)).await {
            Ok(resp) => resp.succeeded(),
            Err(e) => {
                tracing::warn!(error = %e, "cluster: cannot prove leadership");
                false
            }
        }
    }
}

impl Fence for EtcdFence {
    fn still_leading(&self) -> FenceCheck<'_> {
        Box::pin(self.check())
    }
}
