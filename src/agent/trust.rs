//! The trust bundle and the CRLs: installed atomically only when they parse, refreshed
//! with conditional requests, a changed bundle running the restart hook under the lease and
//! waiting for the member to be healthy again.

use super::*;

/// The ETag the server sends for a body.
pub(super) fn etag_of(body: &[u8]) -> String {
    format!("\"{}\"", pki::sha256_hex(body))
}

/// GET with If-None-Match: `None` when unchanged.
pub(super) async fn conditional_get(
    client: &ApiClient,
    path: &str,
    etag: Option<&str>,
) -> Result<Option<Vec<u8>>, AgentError> {
    let headers: Vec<(hyper::header::HeaderName, String)> = etag
        .map(|e| vec![(hyper::header::IF_NONE_MATCH, e.to_string())])
        .unwrap_or_default();
    let response = ApiClient::check(
        client
            .send(hyper::Method::GET, path, None, &headers)
            .await?,
    )?;
    if response.status == hyper::StatusCode::NOT_MODIFIED {
        return Ok(None);
    }
    Ok(Some(response.body.to_vec()))
}

impl Agent {
    /// Fetches the trust bundle again through the pin the agent enrolled with (and the
    /// endorsements since), when the installed one cannot be read.
    pub(super) async fn repair_bundle(&mut self) -> Result<(), AgentError> {
        let damage = match read_bundle(&self.settings.dir) {
            Ok(_) => return Ok(()),
            Err(e) => e.to_string(),
        };
        let pin = self.settings.ca_fingerprint.clone();
        let client = self.pinned_client()?;
        let text = client.trust_bundle().await?;
        let bundle = pki::pem_certificates(&text).map_err(|e| AgentError::BadAnswer {
            what: "trust bundle",
            reason: e.to_string(),
        })?;
        if let Some(stranger) = stranger_in(&client, &pin, &bundle, now()).await? {
            return Err(AgentError::BadAnswer {
                what: "trust bundle",
                reason: format!("it holds {stranger}, which the pinned CA {pin} never endorsed"),
            });
        }
        let path = self.path(files::CA_BUNDLE);
        fsutil::write_atomic(&path, text.as_bytes(), fsutil::PUBLIC)?;
        tracing::warn!(file = %path.display(), damage = %damage, "repaired the trust bundle");
        Ok(())
    }

    /// Writes a new trust bundle if it differs from the one on disk.
    pub(super) async fn install_bundle(
        &mut self,
        pem_text: &str,
        changed: &mut Vec<PathBuf>,
    ) -> Result<(), AgentError> {
        let path = self.path(files::CA_BUNDLE);
        let current = std::fs::read_to_string(&path).ok();
        if current.as_deref() == Some(pem_text) {
            return Ok(());
        }
        fsutil::write_atomic(&path, pem_text.as_bytes(), fsutil::PUBLIC)?;
        self.state.bundle_etag = Some(etag_of(pem_text.as_bytes()));
        tracing::info!(
            action = "trust-bundle",
            certificates = pem_text.matches("BEGIN CERTIFICATE").count(),
            "installed trust bundle"
        );
        changed.push(path.clone());
        if current.is_none() {
            // First enrollment: etcd starts with this bundle.
            self.state.running_bundle = bundle_fingerprints(&self.settings.dir);
        }
        Ok(())
    }

    /// True when the server says another CA signs now and that CA is in our bundle: the
    /// certificate comes from a retiring issuer and is re-issued at once.
    pub(super) fn issued_by_retiring_ca(&self, der: &[u8]) -> bool {
        let Some(active) = &self.active_ca else {
            return false;
        };
        let Ok(bundle) = read_bundle(&self.settings.dir) else {
            return false;
        };
        let Some(active_der) = bundle.iter().find(|c| &pki::fingerprint(c) == active) else {
            return false;
        };
        pki::parse_certificate(der).is_ok_and(|cert| !pki::is_issued_by(&cert, active_der))
    }

    /// A changed trust bundle. etcd reads it only at start, so with an --on-trust-change hook
    /// this is one step of a rolling restart: take the cluster-wide restart lease, install the
    /// bundle, run the hook, wait until the local member is healthy with the new bundle, report,
    /// give the lease back. Returns false when another member holds the lease (try later).
    pub(super) async fn change_trust(&mut self, pem_text: &str) -> Result<bool, AgentError> {
        let path = self.path(files::CA_BUNDLE);
        if std::fs::read_to_string(&path).ok().as_deref() == Some(pem_text) {
            return Ok(true);
        }
        let Some(hook) = self.settings.on_trust_change.clone() else {
            // Nothing restarts etcd: install it; etcd keeps running with what it started with.
            let mut changed = Vec::new();
            self.install_bundle(pem_text, &mut changed).await?;
            return Ok(true);
        };
        let member = self
            .settings
            .profiles
            .iter()
            .any(|p| crate::policy::is_member_profile(p));
        if !member {
            // A client's consumer (say kube-apiserver) is restarted by its hook; the restart
            // lease is the members' (only member certificates may take it).
            let mut changed = Vec::new();
            self.install_bundle(pem_text, &mut changed).await?;
            self.run_hook(Some(hook), "trust-change", std::slice::from_ref(&path))
                .await;
            return Ok(true);
        }
        let client = self.node_client()?;
        let lease = client.take_lease().await;
        match lease {
            Ok(_) => {}
            Err(ClientError::Api { code, message, .. })
                if ErrorCode::parse(&code) == Some(ErrorCode::LeaseHeld) =>
            {
                tracing::info!(reason = %message, "trust bundle changed; waiting for the restart lease");
                return Ok(false);
            }
            Err(e) => return Err(e.into()),
        }
        let restarted = async {
            let mut changed = Vec::new();
            self.install_bundle(pem_text, &mut changed).await?;
            self.run_hook(Some(hook), "trust-change", std::slice::from_ref(&path))
                .await;
            self.wait_member_healthy().await?;
            self.state.running_bundle = bundle_fingerprints(&self.settings.dir);
            tracing::info!(action = "trust-change", running_bundle = ?self.state.running_bundle, "member restarted with the new trust bundle");
            self.report().await
        }
        .await;
        let released = client.release_lease().await;
        if let Err(e) = released {
            tracing::warn!(error = %e, "cannot return the restart lease; it expires on its own");
        }
        restarted.map(|()| true)
    }

    /// Waits until the local member answers /health over TLS trusting the installed bundle.
    pub(super) async fn wait_member_healthy(&self) -> Result<(), AgentError> {
        let Some(endpoint) = &self.settings.etcd_endpoint else {
            return Ok(());
        };
        let deadline = now() + time::Duration::minutes(2);
        loop {
            let answer = match self.member_client(endpoint) {
                Ok(c) => c
                    .send(hyper::Method::GET, "/health", None, &[])
                    .await
                    .map_err(AgentError::from),
                Err(e) => Err(e),
            };
            match answer {
                Ok(r)
                    if r.status.is_success()
                        && String::from_utf8_lossy(&r.body).contains("true") =>
                {
                    return Ok(())
                }
                other => {
                    if now() > deadline {
                        return Err(AgentError::BadAnswer {
                            what: "member health",
                            reason: format!(
                                "{endpoint} is not healthy after the restart: {other:?}"
                            ),
                        });
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// A client of the local etcd member, trusting the installed bundle.
    pub(super) fn member_client(&self, endpoint: &str) -> Result<ApiClient, AgentError> {
        let installed = self.any_installed().ok_or_else(|| AgentError::BadAnswer {
            what: "member health",
            reason: "no certificate to authenticate with".into(),
        })?;
        Ok(ApiClient::new(
            endpoint,
            Trust::Bundle(read_bundle(&self.settings.dir)?),
            Some(identity(&installed)),
        )?
        .with_timeout(Duration::from_secs(3)))
    }

    /// Fetches the trust bundle and the CRL if they changed (conditional requests). Returns
    /// false while a changed bundle waits for the restart lease.
    pub(super) async fn refresh_trust(&mut self) -> Result<bool, AgentError> {
        let client = self.ca_client(None)?;
        let mut settled = true;
        // What is on disk, not what the state file remembers: a damaged file is fetched again.
        let etag = std::fs::read(self.path(files::CA_BUNDLE))
            .ok()
            .map(|b| etag_of(&b));
        let response = conditional_get(&client, "/v1/ca", etag.as_deref()).await?;
        if let Some(body) = response {
            let text = String::from_utf8(body).map_err(|e| AgentError::BadAnswer {
                what: "trust bundle",
                reason: e.to_string(),
            })?;
            pki::pem_certificates(&text).map_err(|e| AgentError::BadAnswer {
                what: "trust bundle",
                reason: e.to_string(),
            })?;
            if !self.change_trust(&text).await? {
                // Not installed yet: ask again next time (the ETag must not say we have it).
                self.state.bundle_etag = None;
                settled = false;
            }
        }
        self.refresh_crl(false).await?;
        let health = client.health().await?;
        self.active_ca = Some(health.ca_fingerprint);
        // The pass reports when it ends (Agent::run), with its outcome.
        Ok(settled)
    }

    pub(super) async fn refresh_crl(&mut self, force: bool) -> Result<(), AgentError> {
        let client = self.ca_client(None)?;
        let path = self.path(files::CRL);
        let etag = match std::fs::read(&path) {
            Ok(der) if !force && pki::check_crl_der(&der).is_ok() => Some(etag_of(&der)),
            _ => None,
        };
        if let Some(der) = conditional_get(&client, "/v1/crl", etag.as_deref()).await? {
            // A broken CRL makes etcd refuse every client: never write one.
            pki::check_crl_der(&der).map_err(|e| AgentError::BadAnswer {
                what: "CRL",
                reason: e.to_string(),
            })?;
            let unchanged = std::fs::read(&path).is_ok_and(|old| old == der);
            self.state.crl_etag = Some(etag_of(&der));
            if !unchanged {
                fsutil::write_atomic(&path, &der, fsutil::PUBLIC)?;
                tracing::info!(action = "crl", bytes = der.len(), "installed CRL");
            }
        }
        // One CRL per CA in the bundle, signed by it, for RFC 5280 checkers (etcd reads only
        // ca.crl): a failure here is logged, never fatal to etcd's own file.
        let bundle = read_bundle(&self.settings.dir)?;
        match crls::refresh_issuer_crls(&client, &self.settings.dir, &bundle).await {
            Ok(changed) if !changed.written.is_empty() || !changed.removed.is_empty() => {
                tracing::info!(
                    action = "issuer-crls",
                    written = changed.written.len(),
                    removed = changed.removed.len(),
                    "updated the per-CA CRLs"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot refresh the per-CA CRLs"),
        }
        Ok(())
    }
}
