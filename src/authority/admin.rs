//! Admin authentication: admin tokens (created, listed, revoked, cached for a moment and
//! checked against their expiry) and admin-profile client certificates.

use super::*;

/// A recently seen admin token: its actor, until when the entry is trusted (monotonic), and the
/// token's own expiry.
pub(super) type CachedAdmin = (AdminActor, std::time::Instant, Option<OffsetDateTime>);

impl Authority {
    /// Creates a bearer token for the admin API. It does not expire; it is shown once.
    pub async fn create_admin_token(
        &self,
        ttl: Option<std::time::Duration>,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<CreatedToken, AuthorityError> {
        let generated = tokens::generate()?;
        let expires_at = ttl.map(|t| now + to_time(t));
        let record = TokenRecord {
            id: generated.id.clone(),
            kind: TokenKind::Admin,
            secret_sha256: generated.secret_sha256,
            identity: None,
            profiles: Vec::new(),
            common_name: None,
            allow_privileged_common_name: false,
            created_by: actor.to_string(),
            created_at: now,
            expires_at,
            used_at: None,
            request_sha256: None,
            issued_serials: BTreeMap::new(),
            revoked_at: None,
        };
        let event = AuditAction::AdminTokenCreate.event(
            actor,
            now,
            None,
            None,
            format!("admin token {}", generated.id),
        );
        self.store.insert_token(&record, &event).await?;
        Ok(CreatedToken {
            token: generated.text,
            id: generated.id,
            expires_at,
            node: None,
            profiles: Vec::new(),
        })
    }

    /// The admin behind a bearer token.
    pub async fn authenticate_admin_token(&self, text: &str) -> Result<AdminActor, AuthorityError> {
        const FRESH: std::time::Duration = std::time::Duration::from_secs(30);
        let key = ring::digest::digest(&ring::digest::SHA256, text.as_bytes())
            .as_ref()
            .to_vec();
        let now = std::time::Instant::now();
        {
            // A poisoned lock only means a panic while updating the cache; entries stay whole.
            let cache = self.admin_cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((actor, until, expires_at)) = cache.get(&key) {
                if now < *until && expires_at.is_none_or(|at| at > crate::clock::now()) {
                    return Ok(actor.clone());
                }
            }
        }
        match self.find_token(text, TokenKind::Admin).await {
            Ok(token)
                if token.revoked_at.is_some()
                    || token.expires_at.is_some_and(|at| at <= crate::clock::now()) =>
            {
                Err(AuthorityError::AdminTokenInvalid {
                    why: if token.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "expired"
                    },
                })
            }
            Ok(token) => {
                let actor = AdminActor(format!("admin-token:{}", token.id));
                let mut cache = self.admin_cache.lock().unwrap_or_else(|e| e.into_inner());
                if cache.len() > 1024 {
                    cache.clear();
                }
                // Trusted for FRESH at most, and never past the token's own expiry.
                cache.insert(key, (actor.clone(), now + FRESH, token.expires_at));
                Ok(actor)
            }
            Err(AuthorityError::TokenInvalid) => Err(AuthorityError::AdminTokenInvalid {
                why: "not a known admin token",
            }),
            Err(e) => Err(e),
        }
    }

    /// Every admin token (never its secret).
    pub async fn admin_tokens(&self) -> Result<Vec<AdminTokenView>, AuthorityError> {
        Ok(self
            .store
            .admin_tokens()
            .await?
            .into_iter()
            .map(|t| AdminTokenView {
                id: t.id,
                created_by: t.created_by,
                created_at: t.created_at,
                expires_at: t.expires_at,
                revoked_at: t.revoked_at,
            })
            .collect())
    }

    /// Revokes an admin token: refused from now on here, within the server's poll (2 s) on
    /// other servers (they forget their cache when a revocation appears in the store).
    pub async fn revoke_admin_token(
        &self,
        id: &str,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<(), AuthorityError> {
        let event = AuditAction::AdminTokenRevoke.event(
            actor,
            now,
            None,
            None,
            format!("admin token {id}"),
        );
        if !self.store.revoke_admin_token(id, &event).await? {
            return Err(AuthorityError::AdminTokenUnknown { id: id.to_string() });
        }
        self.forget_admin_tokens();
        Ok(())
    }

    /// Forgets the verified admin tokens when one was revoked since the last call (by any
    /// process): the next request of each checks the store again.
    pub async fn follow_admin_revocations(&self) -> Result<(), AuthorityError> {
        let epoch = self.store.admin_token_revocations().await?;
        let mut seen = self
            .admin_revocations
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if *seen != Some(epoch) {
            if seen.is_some() {
                self.forget_admin_tokens();
            }
            *seen = Some(epoch);
        }
        Ok(())
    }

    pub(super) fn forget_admin_tokens(&self) {
        self.admin_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// The admin behind a client certificate of the admin profile.
    pub async fn authenticate_admin_certificate(
        &self,
        der: &[u8],
        now: OffsetDateTime,
    ) -> Result<AdminActor, AuthorityError> {
        let record = self.verify_client_certificate(der, now).await?;
        if record.profile != ADMIN_PROFILE {
            return Err(AuthorityError::AdminRequired);
        }
        Ok(AdminActor(format!("admin-cert:{}", record.common_name)))
    }
}
