//! `[daemon] metrics_listen` in the loop: accepting on the metrics
//! listener and answering each connection's one request from the same
//! replies as `forkctl metrics` and `forkctl health`. The sockets and the
//! HTTP framing are `crate::control::scrape`; nothing here blocks.

use std::time::Instant;

use mio::{Interest, Token};

use super::{Source, Supervisor, METRICS};
use crate::control::exposition::CONTENT_TYPE;
use crate::control::scrape::{Reply, Route, ScrapeServer};

impl Supervisor {
    /// Binds `metrics_listen`, if set, and registers it.
    pub(super) fn bind_metrics(&mut self) -> std::io::Result<()> {
        let Some(addr) = self.config.daemon.metrics_listen.clone() else {
            return Ok(());
        };
        let mut server = ScrapeServer::bind(&addr).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "[daemon] metrics_listen {}: {e}",
                    crate::config::listen_text(&addr)
                ),
            )
        })?;
        self.poll
            .registry()
            .register(server.source(), METRICS, Interest::READABLE)?;
        match (server.local_addr(), server.path()) {
            (Some(sa), _) => log::info!("metrics listening on http://{sa}/metrics"),
            (None, Some(path)) => log::info!("metrics listening on unix:{}", path.display()),
            (None, None) => {}
        }
        self.metrics = Some(server);
        Ok(())
    }

    /// The listener is readable: register every accepted connection.
    pub(super) fn accept_metrics(&mut self) {
        let Some(server) = self.metrics.as_mut() else {
            return;
        };
        for mut conn in server.accept(Instant::now()) {
            let token = Token(self.next_token);
            self.next_token += 1;
            let interest = Interest::READABLE | Interest::WRITABLE;
            match self
                .poll
                .registry()
                .register(conn.source(), token, interest)
            {
                Ok(()) => {
                    self.sources.insert(token, Source::Scrape(conn));
                }
                Err(e) => {
                    log::warn!("metrics_listen: cannot watch a connection: {e}");
                    server.closed();
                }
            }
        }
    }

    /// A connection is ready: read its request, answer, write.
    pub(super) fn serve_metrics(&mut self, token: Token) {
        let Some(Source::Scrape(mut conn)) = self.sources.remove(&token) else {
            return;
        };
        if conn.pump(|route| self.scrape_reply(route)) {
            self.sources.insert(token, Source::Scrape(conn));
        } else {
            self.close_metrics(conn);
        }
    }

    fn scrape_reply(&self, route: Route) -> Reply {
        match route {
            Route::Metrics => (200, CONTENT_TYPE, self.metrics_text().into_bytes()),
            Route::Health => {
                let health = self.health_reply();
                let healthy = health["healthy"] == true;
                let body = if healthy {
                    serde_json::json!({ "healthy": true })
                } else {
                    serde_json::json!({ "healthy": false, "reasons": health["reasons"] })
                };
                let mut body = serde_json::to_vec(&body).unwrap_or_default();
                body.push(b'\n');
                (if healthy { 200 } else { 503 }, "application/json", body)
            }
        }
    }

    /// The nearest idle deadline of the metrics connections.
    pub(super) fn metrics_deadline(&self) -> Option<Instant> {
        self.source_deadline(scrape_deadline)
    }

    /// Closes the connections past their deadline.
    pub(super) fn close_idle_metrics(&mut self, now: Instant) {
        for token in self.sources_due(now, scrape_deadline) {
            if let Some(Source::Scrape(conn)) = self.sources.remove(&token) {
                log::debug!("metrics_listen: closed a connection idle for its timeout");
                self.close_metrics(conn);
            }
        }
    }

    fn close_metrics(&mut self, mut conn: crate::control::scrape::ScrapeConnection) {
        let _ = self.poll.registry().deregister(conn.source());
        if let Some(server) = self.metrics.as_mut() {
            server.closed();
        }
    }
}

fn scrape_deadline(source: &Source) -> Option<Instant> {
    match source {
        Source::Scrape(conn) => Some(conn.deadline()),
        _ => None,
    }
}
