//! The accept loop. Each connection runs in its own task until it ends or the
//! shutdown signal fires.

use tokio::net::TcpListener;
use tokio::sync::watch;

use super::connection::Connection;
use super::Context;

pub async fn serve(listener: TcpListener, ctx: Context, mut shutdown: watch::Receiver<bool>) {
    let max_frame = ctx.replicas.config().socket_request_max_bytes;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let ctx = ctx.clone();
                    let mut shutdown = shutdown.clone();
                    tokio::spawn(async move {
                        tokio::select! {
                            result = Connection::new(stream, max_frame).run(ctx) => {
                                if let Err(e) = result {
                                    tracing::info!(%peer, error = %e, "connection ended");
                                }
                            }
                            _ = shutdown.changed() => {}
                        }
                    });
                }
                Err(e) => {
                    // Out of descriptors and the like: back off rather than spin.
                    tracing::error!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            _ = shutdown.changed() => return,
        }
    }
}
