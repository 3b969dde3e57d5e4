//! Enrollment at boot: the token (literal or re-read from its file), one key per profile
//! kept pending until enrolled (so a retry resumes with the same keys), the enrollment request.

use super::*;

/// The first CA of `bundle` that is neither `pin` nor endorsed by it (through the server's
/// lineage), as a fingerprint; None when the pin vouches for all of them.
pub(super) async fn stranger_in(
    client: &ApiClient,
    pin: &str,
    bundle: &[Vec<u8>],
    now: OffsetDateTime,
) -> Result<Option<String>, AgentError> {
    if bundle.iter().all(|c| pki::fingerprint(c) == pin) {
        return Ok(None);
    }
    let lineage = pki::pem_certificates(&String::from_utf8_lossy(&client.lineage().await?))?;
    let vouched = crate::lineage::vouched_for(&[pin.to_string()], &lineage, now);
    Ok(bundle
        .iter()
        .find(|c| !vouched.contains(c))
        .map(|c| pki::fingerprint(c)))
}

pub(super) fn pending_key(profile: &str) -> String {
    format!(".{profile}.key.pending")
}

impl Agent {
    pub(super) fn token_file(&self) -> Option<PathBuf> {
        match &self.settings.token {
            Some(TokenSource::File(path)) => Some(path.clone()),
            _ => None,
        }
    }

    /// The bootstrap token, if one was given. A token file that is missing or unreadable is an
    /// error naming it; an empty one means "no token yet".
    pub(super) fn read_token(&self) -> Result<Option<String>, AgentError> {
        match &self.settings.token {
            None => Ok(None),
            Some(TokenSource::Literal(t)) => Ok(Some(t.clone())),
            Some(TokenSource::File(path)) => match std::fs::read_to_string(path) {
                Ok(text) => Ok(Some(text.trim().to_string()).filter(|t| !t.is_empty())),
                Err(e) => Err(AgentError::TokenFile {
                    path: path.clone(),
                    reason: match e.kind() {
                        std::io::ErrorKind::NotFound => "it does not exist".to_string(),
                        _ => e.to_string(),
                    },
                }),
            },
        }
    }

    /// Enrolls every profile without a usable certificate (missing, mismatched, expired,
    /// listed in the installed CRL, or refused by the CA at renewal).
    pub(super) async fn enroll_missing(&mut self) -> Result<(), AgentError> {
        let now = now();
        let revoked = self.revoked_installed();
        let missing: Vec<String> = self
            .settings
            .profiles
            .iter()
            .filter(|p| {
                self.refused.contains(*p)
                    || load_installed(&self.settings.dir, p).is_none_or(|i| {
                        i.validity.not_after <= now
                            || revoked.contains(i.serial.trim_start_matches('0'))
                    })
            })
            .cloned()
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let Some(token) = self.read_token()? else {
            let reason = if missing.iter().any(|p| {
                self.refused.contains(p)
                    || load_installed(&self.settings.dir, p)
                        .is_some_and(|i| revoked.contains(i.serial.trim_start_matches('0')))
            }) {
                "its certificate is revoked (listed in the CRL, or refused by the CA)"
            } else if missing
                .iter()
                .any(|p| self.path(&files::certificate(p)).exists())
            {
                "a certificate expired (the node was off too long to renew over mTLS)"
            } else {
                "this node has no certificates yet"
            };
            return Err(AgentError::NeedToken {
                profiles: missing,
                reason: reason.into(),
                token_file: self.token_file(),
            });
        };

        let pin = self.settings.ca_fingerprint.clone();
        let client = self.pinned_client()?;
        let pin_mismatch = |reason: String| AgentError::PinMismatch {
            server: self.settings.server.clone(),
            pin: pin.clone(),
            reason,
        };
        // Make sure this is the pinned CA before anything is written.
        match client.get("/v1/health").await {
            Err(ClientError::Untrusted { reason, .. }) => return Err(pin_mismatch(reason)),
            other => {
                other?;
            }
        }

        // Keys: reuse the key on disk (only the certificate then changes under etcd), else a
        // pending key kept across retries, else a new one. Keys never leave this host.
        let mut keys = BTreeMap::new();
        let mut csrs = BTreeMap::new();
        for profile in &missing {
            // A revoked or refused certificate's key is not used again.
            let fresh = self.refused.contains(profile)
                || load_installed(&self.settings.dir, profile)
                    .is_some_and(|i| revoked.contains(i.serial.trim_start_matches('0')));
            let key = self.enrollment_key(profile, fresh)?;
            let mut params = CertificateParams::default();
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, self.settings.node.as_str());
            params.distinguished_name = dn;
            let csr = params
                .serialize_request(&key)
                .and_then(|c| c.pem())
                .map_err(|e| PkiError::Csr(e.to_string()))?;
            csrs.insert(profile.clone(), csr);
            keys.insert(profile.clone(), key);
        }
        let request = EnrollBody {
            token: token.to_string(),
            node: Some(self.settings.node.to_string()),
            csrs: csrs.clone(),
        };
        let answer: Enrollment = match client.enroll(&request).await {
            Ok(a) => a,
            Err(ClientError::Untrusted { reason, .. }) => return Err(pin_mismatch(reason)),
            // A token file can be given a new token while the agent waits; a literal cannot.
            Err(ClientError::Api { code, message, .. })
                if is_token_refusal(&code)
                    && matches!(self.settings.token, Some(TokenSource::File(_))) =>
            {
                return Err(AgentError::NeedToken {
                    profiles: missing,
                    reason: format!("the CA refused the token ({code}: {message})"),
                    token_file: self.token_file(),
                })
            }
            Err(ClientError::Api {
                status,
                code,
                message,
                ..
            }) if (400..500).contains(&status) && status != 408 && status != 429 => {
                // Retrying cannot help, so leave nothing behind (keys made for this request).
                for profile in &missing {
                    let _ = std::fs::remove_file(self.path(&pending_key(profile)));
                }
                return Err(AgentError::EnrollRefused {
                    node: self.settings.node.to_string(),
                    code,
                    message,
                });
            }
            Err(e) => return Err(e.into()),
        };
        let bundle =
            pki::pem_certificates(&answer.trust_bundle).map_err(|e| AgentError::BadAnswer {
                what: "trust bundle",
                reason: e.to_string(),
            })?;
        // Every CA in the bundle must be the pinned one or one it endorsed (a pin taken before
        // a rotation still enrolls after it).
        if let Some(stranger) = stranger_in(&client, &pin, &bundle, now).await? {
            return Err(pin_mismatch(format!(
                "its trust bundle holds {stranger}, which the pinned CA never endorsed"
            )));
        }
        let mut checked = BTreeMap::new();
        for (profile, key) in &keys {
            let issued = answer
                .certificates
                .get(profile)
                .ok_or(AgentError::BadAnswer {
                    what: "enrollment",
                    reason: format!("no {profile} certificate in it"),
                })?;
            check_certificate(
                &issued.certificate_pem,
                &key.subject_public_key_info(),
                &bundle,
                None,
                now,
            )
            .map_err(|refusal| AgentError::Refused {
                profile: profile.clone(),
                refusal,
            })?;
            checked.insert(profile.clone(), issued);
        }

        let mut changed = Vec::new();
        self.install_bundle(&answer.trust_bundle, &mut changed)
            .await?;
        for (profile, issued) in checked {
            let key_path = self.path(&files::key(&profile));
            let pending = self.path(&pending_key(&profile));
            if pending.exists() {
                std::fs::rename(&pending, &key_path)
                    .map_err(|e| FsError::new("install", &key_path, e))?;
                fsutil::sync_dir(&self.settings.dir)?;
                changed.push(key_path);
            }
            let cert_path = self.path(&files::certificate(&profile));
            fsutil::write_atomic(
                &cert_path,
                issued.certificate_pem.as_bytes(),
                fsutil::PUBLIC,
            )?;
            tracing::info!(action = "enroll", profile = %profile, serial = %issued.serial, not_after = %rfc3339(issued.not_after), "installed certificate");
            changed.push(cert_path);
        }
        for profile in &missing {
            self.refused.remove(profile);
        }
        self.refresh_crl(true).await?;
        self.run_hook(self.settings.on_renew.clone(), "enroll", &changed)
            .await;
        Ok(())
    }

    /// The serials (hex, no leading zeros) the installed CRL lists.
    pub(super) fn revoked_installed(&self) -> std::collections::BTreeSet<String> {
        revoked_in(&self.settings.dir)
    }

    /// The key to enroll `profile` with: the one on disk (only the certificate then changes
    /// under etcd) unless `fresh`, else a pending key kept across retries, else a new one.
    pub(super) fn enrollment_key(&self, profile: &str, fresh: bool) -> Result<KeyPair, AgentError> {
        let key_path = self.path(&files::key(profile));
        let on_disk = if fresh {
            None
        } else {
            std::fs::read_to_string(&key_path).ok()
        };
        if let Some(pem_text) = on_disk {
            for key_type in [
                KeyType::EcdsaP256,
                KeyType::EcdsaP384,
                KeyType::Ed25519,
                KeyType::Rsa,
            ] {
                if let Ok(key) = pki::load_private_key(&pem_text, key_type) {
                    return Ok(key);
                }
            }
        }
        let pending = self.path(&pending_key(profile));
        if let Ok(pem_text) = std::fs::read_to_string(&pending) {
            if let Ok(key) = pki::load_private_key(&pem_text, KeyType::EcdsaP256) {
                return Ok(key);
            }
        }
        let key = KeyType::EcdsaP256.generate()?;
        fsutil::write_atomic(&pending, key.serialize_pem().as_bytes(), fsutil::PRIVATE)?;
        Ok(key)
    }
}

/// A refusal of the token itself (a new token in the file can fix it).
fn is_token_refusal(code: &str) -> bool {
    matches!(
        ErrorCode::parse(code),
        Some(
            ErrorCode::TokenInvalid
                | ErrorCode::TokenExpired
                | ErrorCode::TokenUsed
                | ErrorCode::TokenLocked
        )
    )
}

/// The serials (hex, no leading zeros) the CRL installed in `dir` lists; none without one.
pub(super) fn revoked_in(dir: &Path) -> std::collections::BTreeSet<String> {
    std::fs::read(dir.join(files::CRL))
        .ok()
        .and_then(|bytes| pki::crl_contents(&bytes).ok())
        .map(|(_, crl)| {
            crl.revoked
                .into_iter()
                .map(|(serial, _, _)| serial.trim_start_matches('0').to_string())
                .collect()
        })
        .unwrap_or_default()
}
