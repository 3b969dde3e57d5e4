//! Boot enrollment: bootstrap tokens bound to a node, and their single use (a retried
//! enrollment is recognised and answered with the same certificates).

use super::*;

/// SHA-256 over the profiles and public keys of an enrollment: identifies a retry. Keys, not CSR
/// bytes, because ECDSA signatures are randomised: a node that re-signs a CSR for the same key
/// after a restart is making the same request.
pub(super) fn enrollment_digest(csrs: &BTreeMap<String, VerifiedCsr>) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for (profile, csr) in csrs {
        ctx.update(&(profile.len() as u64).to_be_bytes());
        ctx.update(profile.as_bytes());
        ctx.update(&(csr.public_key.len() as u64).to_be_bytes());
        ctx.update(&csr.public_key);
    }
    hex::encode(ctx.finish())
}

impl Authority {
    /// Creates a single-use bootstrap token bound to a node identity and profiles. Every rule
    /// the enrollment will face is checked now, so a token that could never work is refused.
    pub async fn create_bootstrap_token(
        &self,
        request: &TokenRequest,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<CreatedToken, AuthorityError> {
        if request.profiles.is_empty() {
            return Err(AuthorityError::TokenWithoutProfiles);
        }
        reserved(&request.node)?;
        if request.ttl > MAX_TOKEN_TTL {
            return Err(AuthorityError::TokenTtlTooLong {
                ttl: HumanDuration::from(request.ttl).to_string(),
                max: HumanDuration::from(MAX_TOKEN_TTL).to_string(),
            });
        }
        let identity = NodeIdentity::new(
            request.node.clone(),
            request.ips.clone(),
            request.dns_names.clone(),
        );
        let key_type = self
            .policy
            .allowed_key_types
            .first()
            .copied()
            .unwrap_or(KeyType::EcdsaP256);
        let issuer_not_after = self.active_generation()?.not_after;
        for profile in &request.profiles {
            self.policy.evaluate(
                &Request {
                    profile,
                    node: &identity,
                    common_name: self.token_common_name(profile, request.common_name.as_deref()),
                    requested_sans: &[],
                    lifetime: None,
                    key_type,
                    allow_privileged_common_name: request.allow_privileged_common_name,
                },
                now,
                issuer_not_after,
            )?;
        }
        let generated = tokens::generate()?;
        let expires_at = now + to_time(request.ttl);
        let record = TokenRecord {
            id: generated.id.clone(),
            kind: TokenKind::Bootstrap,
            secret_sha256: generated.secret_sha256,
            identity: Some(identity),
            profiles: request.profiles.clone(),
            common_name: request.common_name.clone(),
            allow_privileged_common_name: request.allow_privileged_common_name,
            created_by: actor.to_string(),
            created_at: now,
            expires_at: Some(expires_at),
            used_at: None,
            request_sha256: None,
            issued_serials: BTreeMap::new(),
            revoked_at: None,
        };
        let event = AuditAction::TokenCreate.event(
            actor,
            now,
            Some(request.node.to_string()),
            None,
            format!(
                "token {} for profiles {} until {}",
                generated.id,
                request.profiles.join(","),
                rfc3339(expires_at)
            ),
        );
        self.store.insert_token(&record, &event).await?;
        Ok(CreatedToken {
            token: generated.text,
            id: generated.id,
            expires_at: Some(expires_at),
            node: Some(request.node.to_string()),
            profiles: request.profiles.clone(),
        })
    }

    /// The CN a token passes for a profile: only profiles whose CN comes from the request use it.
    pub(super) fn token_common_name<'a>(
        &self,
        profile: &str,
        common_name: Option<&'a str>,
    ) -> Option<&'a str> {
        match self.policy.profile(profile) {
            Ok(p) if p.common_name == crate::policy::CommonNameRule::FromRequest => common_name,
            _ => None,
        }
    }

    /// Looks a token up by its id and checks its secret in constant time.
    pub(super) async fn find_token(
        &self,
        text: &str,
        kind: TokenKind,
    ) -> Result<TokenRecord, AuthorityError> {
        let (id, secret) = tokens::parse(text).ok_or(AuthorityError::TokenInvalid)?;
        let token = self
            .store
            .token(id)
            .await?
            .ok_or(AuthorityError::TokenInvalid)?;
        if token.kind != kind || !tokens::secret_matches(&token.secret_sha256, secret) {
            return Err(AuthorityError::TokenInvalid);
        }
        Ok(token)
    }

    /// Enrolls a node: a bootstrap token and one CSR per profile become certificates. A retry
    /// of the same token with the same CSRs (a lost response) gets the same certificates back;
    /// any other reuse is refused. Nothing is recorded unless everything is valid. `node`, when
    /// given, is the node the caller believes it is: a token for another node is refused.
    pub async fn enroll(
        &self,
        token_text: &str,
        node: Option<&str>,
        csrs: &BTreeMap<String, String>,
        now: OffsetDateTime,
    ) -> Result<Enrollment, AuthorityError> {
        let token = self.find_token(token_text, TokenKind::Bootstrap).await?;
        let identity = token.identity.clone().ok_or(AuthorityError::TokenInvalid)?;
        if let Some(asked) = node.filter(|n| *n != identity.name.as_str()) {
            return Err(AuthorityError::NodeMismatch {
                asked: asked.to_string(),
                token_node: identity.name.to_string(),
            });
        }
        match token.expires_at {
            Some(expired_at) if expired_at <= now => {
                return Err(AuthorityError::TokenExpired { expired_at })
            }
            _ => {}
        }
        if csrs.is_empty() {
            return Err(AuthorityError::NoCsrs);
        }
        let mut verified = BTreeMap::new();
        for (profile, pem_text) in csrs {
            if !token.profiles.contains(profile) {
                return Err(AuthorityError::TokenProfileNotAllowed {
                    profile: profile.clone(),
                    allowed: token.profiles.clone(),
                });
            }
            let csr = VerifiedCsr::from_pem(pem_text).map_err(|source| AuthorityError::Csr {
                profile: profile.clone(),
                source,
            })?;
            verified.insert(profile.clone(), csr);
        }
        let request_sha256 = enrollment_digest(&verified);

        if token.used_at.is_some() {
            return self.replay_enrollment(&token, &request_sha256, now).await;
        }

        let issuer_not_after = self.active_generation()?.not_after;
        let mut records = Vec::new();
        let mut certificates = BTreeMap::new();
        for (profile, csr) in &verified {
            let grant = self.policy.evaluate(
                &Request {
                    profile,
                    node: &identity,
                    common_name: self.token_common_name(profile, token.common_name.as_deref()),
                    requested_sans: &csr.sans,
                    lifetime: None,
                    key_type: csr.key_type,
                    allow_privileged_common_name: token.allow_privileged_common_name,
                },
                now,
                issuer_not_after,
            )?;
            let public_key =
                rcgen::SubjectPublicKeyInfo::from_der(&csr.public_key).map_err(|e| {
                    AuthorityError::Csr {
                        profile: profile.clone(),
                        source: PkiError::Csr(e.to_string()),
                    }
                })?;
            let (record, issued) = self.sign(&grant, &public_key, now, None)?;
            records.push(record);
            certificates.insert(profile.clone(), issued);
        }
        let actor = format!("token:{}", token.id);
        let events: Vec<AuditEvent> = certificates
            .values()
            .map(|c| {
                AuditAction::Enroll.event(
                    &actor,
                    now,
                    Some(c.node.clone()),
                    Some(c.serial.clone()),
                    format!("profile {}, CN {}", c.profile, c.common_name),
                )
            })
            .collect();
        let consumed = self
            .store
            .complete_enrollment(&EnrollmentRecord {
                token_id: &token.id,
                request_sha256: &request_sha256,
                identity: &identity,
                certificates: &records,
                events: &events,
                at: now,
            })
            .await?;
        if !consumed {
            // Another request used the token between our read and our write.
            let token = self.find_token(token_text, TokenKind::Bootstrap).await?;
            return self.replay_enrollment(&token, &request_sha256, now).await;
        }
        for c in certificates.values() {
            tracing::info!(action = "enroll", serial = %c.serial, profile = %c.profile, node = %c.node, not_after = %rfc3339(c.not_after), "issued certificate");
        }
        Ok(Enrollment {
            node: identity.name.to_string(),
            certificates,
            trust_bundle: self.trust_bundle_pem(),
            replayed: false,
        })
    }

    pub(super) async fn replay_enrollment(
        &self,
        token: &TokenRecord,
        request_sha256: &str,
        now: OffsetDateTime,
    ) -> Result<Enrollment, AuthorityError> {
        if token.request_sha256.as_deref() != Some(request_sha256) {
            return Err(AuthorityError::TokenUsed);
        }
        let mut certificates = BTreeMap::new();
        for (profile, serial) in &token.issued_serials {
            let record = self
                .store
                .certificate(serial, now)
                .await?
                .ok_or(AuthorityError::TokenUsed)?;
            // A replay answers a lost response; certificates that expired or were revoked since
            // would help nobody, so the token counts as spent.
            if record.status != CertificateStatus::Valid {
                return Err(AuthorityError::TokenUsed);
            }
            certificates.insert(profile.clone(), IssuedCertificate::from_record(&record));
        }
        Ok(Enrollment {
            node: token
                .identity
                .as_ref()
                .map(|i| i.name.to_string())
                .unwrap_or_default(),
            certificates,
            trust_bundle: self.trust_bundle_pem(),
            replayed: true,
        })
    }

    /// The trusted (not retired) generation that issued `cert`, if any.
    pub(super) fn issuing_generation(
        &self,
        cert: &x509_parser::prelude::X509Certificate<'_>,
    ) -> Option<GenerationRecord> {
        let current = self.current();
        let (id, _) = current
            .trusted
            .iter()
            .find(|(_, ca)| pki::is_issued_by(cert, ca))?;
        current.records.iter().find(|g| g.id == *id).cloned()
    }
}

impl Authority {
    /// True when failed attempts are counted in the store, for every server sharing it.
    pub fn counts_attempts_in_store(&self) -> bool {
        self.store.holds_keys()
    }

    /// Counts a wrong credential for `key`; the failures in its current window and its start.
    pub async fn count_failed_attempt(
        &self,
        key: &str,
        now: OffsetDateTime,
        window: std::time::Duration,
    ) -> Result<(i64, OffsetDateTime), AuthorityError> {
        Ok(self
            .store
            .count_failed_attempt(key, now, window.as_secs() as i64)
            .await?)
    }

    /// The failures counted for `key` in its current window, and its start.
    pub async fn failed_attempts(
        &self,
        key: &str,
        now: OffsetDateTime,
        window: std::time::Duration,
    ) -> Result<Option<(i64, OffsetDateTime)>, AuthorityError> {
        Ok(self
            .store
            .failed_attempts(key, now, window.as_secs() as i64)
            .await?)
    }
}
