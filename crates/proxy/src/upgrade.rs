//! Tunnelling an upgraded connection (WebSocket or any `Upgrade`) between
//! the client and the upstream once the upstream has answered 101.

use std::sync::Arc;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use towergate_core::{ConnectionLease, RequestId};

/// Copies bytes both ways between the two upgraded connections, in a task
/// of its own: the 101 response must reach the client first, since hyper
/// hands over the client's connection only after writing it.
pub(crate) fn spawn_tunnel(
    client: OnUpgrade,
    upstream: OnUpgrade,
    upstream_name: Arc<str>,
    request_id: Option<RequestId>,
    lease: Option<ConnectionLease>,
) {
    match tokio::runtime::Handle::try_current() {
        // Spawning boxes the task; that is the one allocation of the
        // upgrade path and it lives as long as the tunnel.
        Ok(runtime) => {
            runtime.spawn(async move {
                // The client's connection stays counted (and limited) as
                // long as the tunnel that took it over.
                let _lease = lease;
                tunnel(client, upstream, upstream_name, request_id).await;
            });
        }
        Err(_) => tracing::warn!(
            upstream = %upstream_name,
            request_id = request_id.as_ref().map(|id| id.as_str()),
            "no tokio runtime to run the upgraded connection on"
        ),
    }
}

async fn tunnel(
    client: OnUpgrade,
    upstream: OnUpgrade,
    upstream_name: Arc<str>,
    request_id: Option<RequestId>,
) {
    let request_id = request_id.as_ref().map(|id| id.as_str());
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(both) => both,
        Err(error) => {
            tracing::warn!(
                upstream = %upstream_name,
                request_id,
                %error,
                "upgrade failed: could not take over both connections"
            );
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((from_client, from_upstream)) => tracing::debug!(
            upstream = %upstream_name,
            request_id,
            from_client,
            from_upstream,
            "upgraded connection closed"
        ),
        Err(error) => tracing::warn!(
            upstream = %upstream_name,
            request_id,
            %error,
            "upgraded connection failed"
        ),
    }
}
