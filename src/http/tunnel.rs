//! Tunnels after an upgrade: the two upgraded halves joined, and a tunnel that carries a
//! session judged again after every reload, through the same judge-and-record path as a
//! live request, and closed if the new policy would not allow it.

use std::net::IpAddr;
use std::sync::Arc;

use http::Request;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use super::service::{judge_identified, Context};
use crate::detector::Request as DetectorRequest;
use crate::fingerprint::Fingerprint;
use crate::intel::NetInfo;
use crate::policy::Action;
use crate::state::Shared;

/// What a tunnel keeps to judge its session again after a reload: the request as the
/// detector saw it, owned, since the request itself is gone by then.
pub(super) struct Recheck {
    shared: Arc<Shared>,
    ip: IpAddr,
    net: NetInfo,
    method: http::Method,
    path: String,
    headers: http::HeaderMap,
    fingerprint: Option<Fingerprint>,
    peer_trusted: bool,
}

impl Recheck {
    pub fn new(req: &Request<Incoming>, cx: &Context<'_>) -> Recheck {
        Recheck {
            shared: cx.shared.clone(),
            ip: cx.client,
            net: cx.net.clone().into_owned(),
            method: req.method().clone(),
            path: req.uri().path().to_owned(),
            headers: req.headers().clone(),
            fingerprint: cx.fingerprint,
            peer_trusted: cx.peer_trusted,
        }
    }

    /// Whether the session may keep its tunnel under the policy now in force. It is
    /// identified again because the new snapshot may carry other keys (hash key, JWT key
    /// set), and judged and recorded like any request.
    async fn still_allowed(&self) -> bool {
        let started = Instant::now();
        let snap = self.shared.snapshot();
        // The new snapshot's databases and lists decide what the address is now.
        let net = snap.intel.as_ref().map_or_else(|| self.net.clone(), |i| i.lookup(self.ip));
        let req = DetectorRequest {
            now: crate::session::now(),
            ip: self.ip,
            net: &net,
            method: &self.method,
            path: &self.path,
            headers: &self.headers,
            fingerprint: self.fingerprint.as_ref(),
            peer_trusted: self.peer_trusted,
            asserted_user: None,
        };
        let Some(identity) = snap.detector.identify(&req) else {
            return true;
        };
        match judge_identified(&self.shared, &snap, &req, &identity, started).await {
            Some(d) => d.verdict.effective() == Action::Allow,
            // A store failure is not a reason to cut a working session.
            None => true,
        }
    }
}

/// Joins the two upgraded halves once both sides have switched. A tunnel carrying a
/// session is judged again after every reload and closed if the new policy would not
/// allow it.
pub(super) async fn run(client: OnUpgrade, upstream: OnUpgrade, recheck: Option<Recheck>) {
    let (Ok(client), Ok(upstream)) = tokio::join!(client, upstream) else {
        return;
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    let Some(recheck) = recheck else {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        return;
    };
    let mut reloads = recheck.shared.reloaded.subscribe();
    let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
    tokio::pin!(copy);
    loop {
        tokio::select! {
            _ = &mut copy => return,
            changed = reloads.changed() => {
                if changed.is_err() || !recheck.still_allowed().await {
                    tracing::info!(ip = %recheck.ip, "tunnel closed: the session is no longer allowed");
                    return;
                }
            }
        }
    }
}
